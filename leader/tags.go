package leader

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ihaproject/iha/pkg/nova"
)

// TagInMap is R6.1: an exact key decides by its value ("true",
// case-insensitive); otherwise any key containing the tag (case-sensitive)
// with a true value matches. "yes" and "1" are not true.
func TagInMap(m map[string]string, tag string) bool {
	if v, ok := m[tag]; ok {
		return strings.EqualFold(v, "true")
	}
	for k, v := range m {
		if strings.Contains(k, tag) && strings.EqualFold(v, "true") {
			return true
		}
	}
	return false
}

// TagInList is R6.2: the tag is an element or a case-sensitive substring of
// an element; no value check.
func TagInList(l []string, tag string) bool {
	for _, s := range l {
		if strings.Contains(s, tag) {
			return true
		}
	}
	return false
}

// TagIndex is what a cycle knows about tagged images, flavors and
// aggregates (R6.4, R6.9).
type TagIndex struct {
	Tag    string
	Images map[string]bool // evacuable image ids
	// Known are the image ids whose tags were read (in Glance's list or
	// looked up one by one); a server's image outside it is looked up
	// (R6.6: the list leaves out hidden images and other projects' ones).
	Known           map[string]bool
	AnyTaggedFlavor bool
	// EvacuableHosts are the hosts of tagged aggregates; nil when aggregate
	// scoping is off or the aggregate list could not be read (fail-open).
	EvacuableHosts map[string]bool
}

// BuildTagIndex computes the index from Nova's lists.
func BuildTagIndex(s Policy, images []nova.Image, flavors []nova.Flavor, aggs []nova.Aggregate, aggErr error) TagIndex {
	ix := TagIndex{Tag: s.EvacuableTag, Images: map[string]bool{}, Known: map[string]bool{}}
	if s.TaggedImages {
		for _, im := range images {
			ix.Known[im.ID] = true
			if ImageTagged(im, s.EvacuableTag) {
				ix.Images[im.ID] = true
			}
		}
	}
	if s.TaggedFlavors {
		for _, f := range flavors {
			if TagInMap(f.ExtraSpecs, s.EvacuableTag) {
				ix.AnyTaggedFlavor = true
				break
			}
		}
	}
	if s.TaggedAggregates && aggErr == nil {
		ix.EvacuableHosts = map[string]bool{}
		for _, a := range aggs {
			if TagInMap(a.Metadata, s.EvacuableTag) {
				for _, h := range a.Hosts {
					ix.EvacuableHosts[h] = true
				}
			}
		}
	}
	return ix
}

// ImageTagged is R6.3 for an image: its tags (R6.2) or its properties
// (R6.1) carry the tag.
func ImageTagged(im nova.Image, tag string) bool {
	return TagInList(im.Tags, tag) || TagInMap(im.Properties, tag)
}

// FlavorMatches is R6.7: the first key of the server's embedded flavor
// extra specs, in Nova's order, that equals the tag or contains it decides,
// by its value ("true", case-insensitive). Unlike R6.1 an exact key has no
// precedence, and a later composite key does not count.
func FlavorMatches(srv nova.Server, tag string) bool {
	order := srv.FlavorSpecOrder
	if len(order) == 0 { // a client that did not keep the order: Go's sorted keys
		for k := range srv.FlavorExtraSpecs {
			order = append(order, k)
		}
		slices.Sort(order)
	}
	for _, k := range order {
		if k == tag || strings.Contains(k, tag) {
			return strings.EqualFold(srv.FlavorExtraSpecs[k], "true")
		}
	}
	return false
}

// filtersImagesOrFlavors reports whether R6.5's image/flavor filter applies:
// some kind is enabled and has at least one tagged resource.
func (ix TagIndex) filtersImagesOrFlavors(s Policy) bool {
	return (s.TaggedImages && len(ix.Images) > 0) || (s.TaggedFlavors && ix.AnyTaggedFlavor)
}

// ServerEvacuable is R6.5–R6.7 for one server: fail-open when nothing is
// tagged; otherwise image match OR flavor match.
func (ix TagIndex) ServerEvacuable(s Policy, srv nova.Server) bool {
	if !s.TaggedImages && !s.TaggedFlavors {
		return true
	}
	if !ix.filtersImagesOrFlavors(s) {
		return true
	}
	if s.TaggedImages && srv.ImageID != "" && ix.Images[srv.ImageID] {
		return true
	}
	if s.TaggedFlavors && ix.AnyTaggedFlavor && FlavorMatches(srv, ix.Tag) {
		return true
	}
	return false
}

// HostInScope is R6.9/R6.10: with TAGGED_AGGREGATES, only hosts of tagged
// aggregates are recovered (fail-closed when no aggregate is tagged,
// fail-open when the list could not be read).
func (ix TagIndex) HostInScope(s Policy, host string) bool {
	if !s.TaggedAggregates || ix.EvacuableHosts == nil {
		return true
	}
	return ix.EvacuableHosts[host]
}

// SelectServers is R6.11–R6.13 (and the admission check R6.8 with the same
// status filter, fixing W14): it returns every server of the host with its
// plan: pending, or skipped with the reason.
func (ix TagIndex) SelectServers(s Policy, host string, servers []nova.Server, resuming bool) []*ServerRecord {
	out := make([]*ServerRecord, 0, len(servers))
	for _, srv := range servers {
		r := &ServerRecord{ID: srv.ID, Name: srv.Name, OrigStatus: srv.Status, From: host, State: ServerPending,
			Priority: restartPriority(srv.Metadata), Group: strings.TrimSpace(srv.Metadata[RestartGroupKey])}
		switch {
		case !evacuableStatus(srv.Status, resuming):
			r.State, r.Error = ServerSkipped, "status "+srv.Status+" is not evacuated"
		case NameSkipped(srv.Name, s.SkipServersWithName):
			r.State, r.Error = ServerSkipped, "name matches SKIP_SERVERS_WITH_NAME"
		case !ix.ServerEvacuable(s, srv):
			r.State, r.Error = ServerSkipped, "image and flavor not tagged "+ix.Tag
		}
		out = append(out, r)
	}
	return out
}

// anyPending reports whether a plan has a server to evacuate.
func anyPending(plan []*ServerRecord) bool {
	for _, r := range plan {
		if r.State == ServerPending {
			return true
		}
	}
	return false
}

// tagCacheTTL is upstream's cache TTL for tagged images and flavors.
const tagCacheTTL = 300 * time.Second

// tagIndex returns the tag index, refreshed when forced or older than the
// TTL. Fetch errors give empty lists (fail-open, as upstream).
func (r *Reconciler) tagIndex(ctx context.Context, refresh bool) TagIndex {
	r.tagMu.Lock()
	defer r.tagMu.Unlock()
	if r.tagSet && !refresh && r.now().Sub(r.tagAt) < tagCacheTTL {
		return r.tagIx
	}
	// The three listings are independent: made at once, they cost the
	// slowest of them, not their sum, on the path from verdict to fence.
	var images []nova.Image
	var flavors []nova.Flavor
	var aggs []nova.Aggregate
	var aggErr error
	var wg sync.WaitGroup
	if r.cfg.TaggedImages {
		wg.Go(func() {
			var err error
			if images, err = r.read.ListImages(ctx); err != nil {
				r.log.Warn("cannot list images; treating none as tagged", "err", err)
			}
		})
	}
	if r.cfg.TaggedFlavors {
		wg.Go(func() {
			var err error
			if flavors, err = r.read.ListFlavors(ctx); err != nil {
				r.log.Warn("cannot list flavors; treating none as tagged", "err", err)
			}
		})
	}
	if r.cfg.TaggedAggregates {
		wg.Go(func() {
			if aggs, aggErr = r.read.ListAggregates(ctx); aggErr != nil {
				r.log.Warn("cannot list aggregates; not filtering by aggregate", "err", aggErr)
			}
		})
	}
	wg.Wait()
	r.tagIx = BuildTagIndex(r.cfg, images, flavors, aggs, aggErr)
	r.tagAt, r.tagSet = r.now(), true
	return r.tagIx
}

// serverImages completes ix with the images of servers that Glance's list
// did not show (hidden, or another project's), looked up one by one as
// InstanceHA does (R6.6); an answer is kept for the tag cache's TTL, a
// failed lookup counts as untagged and is tried again next time.
func (r *Reconciler) serverImages(ctx context.Context, ix TagIndex, servers []nova.Server) TagIndex {
	if !r.cfg.TaggedImages || !ix.filtersImagesOrFlavors(r.cfg) {
		return ix
	}
	var missing []string
	for _, srv := range servers {
		if srv.ImageID != "" && !ix.Known[srv.ImageID] && !slices.Contains(missing, srv.ImageID) {
			missing = append(missing, srv.ImageID)
		}
	}
	if len(missing) == 0 {
		return ix
	}
	out := ix
	out.Images, out.Known = maps.Clone(ix.Images), maps.Clone(ix.Known)
	if out.Images == nil {
		out.Images = map[string]bool{}
	}
	if out.Known == nil {
		out.Known = map[string]bool{}
	}
	for _, id := range missing {
		r.imgMu.Lock()
		l, ok := r.imgLookups[id]
		r.imgMu.Unlock()
		if !ok || r.now().Sub(l.at) >= tagCacheTTL {
			im, err := r.read.GetImage(ctx, id)
			if err != nil {
				r.log.Warn("cannot look up a server's image; treating it as untagged", "image_id", id, "err", err)
				continue
			}
			l = imageLookup{tagged: ImageTagged(im, r.cfg.EvacuableTag), at: r.now()}
			r.imgMu.Lock()
			if r.imgLookups == nil {
				r.imgLookups = map[string]imageLookup{}
			}
			r.imgLookups[id] = l
			r.imgMu.Unlock()
			r.log.Info("image not in Glance's list looked up", "image_id", id, "hidden", im.Hidden, "tagged", l.tagged)
		}
		out.Known[id] = true
		if l.tagged {
			out.Images[id] = true
		}
	}
	return out
}

type imageLookup struct {
	tagged bool
	at     time.Time
}
