// Package probe finds out what this machine and this user let chpox do:
// each Item is one kernel feature or privilege, tried for real where that
// is harmless (a seized child, a userfaultfd, a socket), and says what a
// user loses without it. It changes nothing on the machine and must not:
// `chpox check` may run anywhere, as anyone.
package probe

// Item is one thing chpox needs or uses.
type Item struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`         // what was found
	Cost   string `json:"cost,omitempty"` // what is lost without it (set when !OK)
	// Needed items make chpox useless when missing; the others cost one
	// kind of process or one feature.
	Needed bool `json:"needed,omitempty"`
}

// Report is the whole answer of Run.
type Report struct {
	Kernel string `json:"kernel"`
	Arch   string `json:"arch"`
	UID    int    `json:"uid"`
	Items  []Item `json:"items"`
}

// Usable tells whether chpox can dump and restore anything at all here.
func (r *Report) Usable() bool {
	for _, it := range r.Items {
		if it.Needed && !it.OK {
			return false
		}
	}
	return true
}
