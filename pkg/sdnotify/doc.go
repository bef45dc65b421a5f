// Package sdnotify tells systemd about a daemon's state, as sd_notify(3)
// does, for units with Type=notify (iha-leader.service, iha-agent.service).
//
// What it owns: the datagram protocol over $NOTIFY_SOCKET (READY=1,
// STOPPING=1, STATUS=…, WATCHDOG=1) and the watchdog period from
// $WATCHDOG_USEC. It is a no-op when the process was not started by systemd.
//
// What it must never do: import anything of IHA's, block (one datagram, no
// retries), or unset the environment (child processes keep it, as systemd
// expects for helpers it should hear from).
package sdnotify
