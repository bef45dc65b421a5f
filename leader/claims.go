package leader

import (
	"context"
	"fmt"
	"strings"
)

// observeClaims raises the alarm when more than one mesh member speaks for
// a host (MeshContested, see MeshMember.Claimants): an event and an error
// log, once per episode and claimant set, and says when it is over. The
// verdict table meanwhile judges the host by Nova's rule alone: the
// mesh's word on it is void, whichever claimant is alive.
func (r *Reconciler) observeClaims(ctx context.Context) {
	now := map[string]bool{}
	for h, m := range r.snap {
		if m.State != MeshContested {
			continue
		}
		now[h] = true
		who := strings.Join(m.Claimants, ", ")
		if r.contested[h] == who {
			continue
		}
		r.contested[h] = who
		msg := fmt.Sprintf("%s is claimed by %d mesh members: %s; the mesh's word on it is void and it is judged by Nova's rule alone "+
			"until all but one are gone (two agents configured for one host, a copied host key, or an impostor)", h, len(m.Claimants), who)
		r.log.Error(msg, "host", h, "claimants", m.Claimants)
		r.event(ctx, h, "HostClaimedTwice", msg, true)
	}
	for h := range r.contested {
		if now[h] {
			continue
		}
		delete(r.contested, h)
		r.log.Info("host no longer claimed by more than one mesh member", "host", h)
		r.event(ctx, h, "HostClaimResolved", h+" is claimed by one mesh member again (or none): the mesh's word on it counts again", false)
	}
}
