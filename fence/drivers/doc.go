// Package drivers wires every fencing driver compiled into this build into a
// fence.Registry, so that cmd/iha-leader and cmd/iha get them all by
// importing one package.
//
// It owns only the list of drivers. It must never hold driver logic; a new
// driver is added here with one line.
package drivers
