// Package objects is the home of the kernel objects a process reaches
// through its descriptors, one subpackage per family: how the object is
// described at dump (from /proc, fdinfo and a pidfd_getfd(2) copy) and how
// it is created again at restore stand side by side there, so a reader who
// wants to know how one kind survives a checkpoint opens one folder.
//
// The records themselves are plain types in pkg/format (the image reader,
// its validator, its fuzzers and `chpox inspect` must know them without
// any syscall code). pkg/dump and pkg/restore stay orchestrators: they
// freeze, order, lay out the data section and hand the finished objects to
// the processes; they do not know the inside of a kind.
//
// Restore creates every object in chpox itself, once, however many fds
// share it; each process then takes the very same open file description
// with pidfd_getfd(2) (pkg/restore).
package objects
