package sandbox

// cleanup is a stack of undo steps for multi-step setup:
//
//	var cu cleanup
//	defer cu.run()
//	... cu.add(undo) after each step ...
//	cu.release() // success: keep everything
type cleanup struct{ fns []func() }

func (c *cleanup) add(f func()) { c.fns = append(c.fns, f) }

// run undoes every step, last first.
func (c *cleanup) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

func (c *cleanup) release() { c.fns = nil }
