// Package archtest holds the test that keeps Parley's package layering as
// DESIGN.md draws it: only node wires services together, and each package
// imports only the project packages its row allows.
package archtest
