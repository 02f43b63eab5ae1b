//go:build !crashpoints

package crashpoint

import "context"

// Enabled reports whether this binary was built with crash points.
const Enabled = false

// Hit does nothing in binaries built without the crashpoints tag.
func Hit(string) {}

// Hold returns ctx in binaries built without the crashpoints tag.
func Hold(ctx context.Context, _ string) context.Context { return ctx }

// Held does nothing in binaries built without the crashpoints tag.
func Held(context.Context) {}

// HitHeld does nothing in binaries built without the crashpoints tag.
func HitHeld(context.Context, string) {}

// Trace does nothing in binaries built without the crashpoints tag.
func Trace(string, string) {}
