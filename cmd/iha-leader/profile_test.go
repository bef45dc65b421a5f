package main

import (
	"testing"

	"github.com/ihaproject/iha/gossip"
	"github.com/ihaproject/iha/pkg/config"
)

// pkg/config does not import gossip, so GOSSIP_PROFILE's knobs are written
// twice: a controller (config.GossipBase) and an agent (gossip.ProfileFromKeys)
// given the same profile name must run the same failure detector, and an
// unset GOSSIP_PROFILE must be the agents' default.
func TestGossipProfilesMatchTheMesh(t *testing.T) {
	names := []string{config.GossipProfileFast, config.GossipProfileLAN, config.GossipProfileDefault}
	for _, name := range names {
		agentSide, err := gossip.ProfileFromKeys(func(k string) (string, bool) { return name, k == gossip.KeyProfile })
		if err != nil {
			t.Fatalf("%s: the agent refuses a profile the leader accepts: %v", name, err)
		}
		s := config.Defaults()
		s.GossipProfile = name
		if got := meshProfile(s); got != agentSide {
			t.Errorf("GOSSIP_PROFILE %s: the leader runs %+v, an agent %+v", name, got, agentSide)
		}
	}
	if got := meshProfile(config.Defaults()); got != gossip.DefaultProfile() {
		t.Errorf("the leader's default profile %+v is not the agents' %+v", got, gossip.DefaultProfile())
	}
}
