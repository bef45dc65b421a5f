package main

import "github.com/ihaproject/iha/pkg/nova"

func novaUpdate(status, reason *string) nova.ServiceUpdate {
	return nova.ServiceUpdate{Status: status, DisabledReason: reason}
}
