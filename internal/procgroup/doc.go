// Package procgroup starts a program together with every process it starts
// as one group, and signals or kills that group as a unit: a process group
// on Unix, a job object on Windows.
//
// The Go slave runs each build command in a group of its own, and
// latent/local runs each local slave in one, so that a timeout, an
// interrupt or a stop reaches the grandchildren a shell leaves behind.
package procgroup
