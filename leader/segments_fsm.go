package leader

import (
	"fmt"
	"strings"
	"time"
)

// segment applies a SegmentCmd: how a host of a failover segment is
// recovered. With ResetFailed (a fallback) the failed servers go back to
// pending for the new method.
func (s *fsmState) segment(c Command, b SegmentCmd) error {
	h, err := s.active(b.Host)
	if err != nil {
		return err
	}
	if b.ResetFailed && h.Phase != PhaseEvacuating {
		return fmt.Errorf("%w: %s is %s, not evacuating", ErrStalePhase, b.Host, h.Phase)
	}
	h.Segment, h.RecoveryMethod, h.Method = b.Segment, b.RecoveryMethod, b.Method
	h.Targets = append([]string(nil), b.Targets...)
	if b.FellBack {
		h.FellBack = true
	}
	reset := 0
	if b.ResetFailed {
		for _, sr := range h.Servers {
			if sr.State == ServerFailed {
				sr.State, sr.Attempts, sr.Error, sr.Pending, sr.FinishedAt = ServerPending, 0, "", nil, time.Time{}
				reset++
			}
		}
	}
	kind := "SegmentRecovery"
	if b.ResetFailed || b.FellBack {
		kind = "RecoveryMethodFallback"
	}
	msg := fmt.Sprintf("failover segment %s (recovery_method %s): method %s", b.Segment, b.RecoveryMethod, b.Method)
	if b.Method == "" {
		msg = fmt.Sprintf("failover segment %s (recovery_method %s)", b.Segment, b.RecoveryMethod)
	}
	if b.Reason != "" {
		msg += ": " + b.Reason
	}
	if reset > 0 {
		msg += fmt.Sprintf("; %d failed servers back to pending", reset)
	}
	s.event(c, h.Host, kind, msg, kind != "SegmentRecovery")
	return nil
}

// park applies a ParkCmd: the recovered host goes into maintenance and its
// record remembers it was parked.
func (s *fsmState) park(c Command, b ParkCmd) error {
	h, err := s.active(b.Host)
	if err != nil {
		return err
	}
	if h.Phase != PhaseReenabling {
		return fmt.Errorf("%w: %s is %s, not reenabling", ErrStalePhase, b.Host, h.Phase)
	}
	h.Parked, h.Reason = true, b.Reason
	s.Settings.Maintenance[b.Host] = strings.TrimSpace(b.Reason)
	s.event(c, h.Host, "HostParkedInMaintenance", b.Reason, true)
	return nil
}
