// Package e2e holds the end-to-end tests of chpox: they build the chpox
// binary and the target programs in ../testdata, run real processes,
// checkpoint and restore them, and check what the programs report about
// their own state. It has no non-test code.
package e2e
