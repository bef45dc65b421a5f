package nova

import (
	"cmp"
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"time"
)

type migrationWire struct {
	ID            wireInt    `json:"id"`
	UUID          wireString `json:"uuid"`
	InstanceUUID  wireString `json:"instance_uuid"`
	SourceCompute wireString `json:"source_compute"`
	DestCompute   wireString `json:"dest_compute"`
	Status        wireString `json:"status"`
	MigrationType wireString `json:"migration_type"`
	CreatedAt     wireTime   `json:"created_at"`
	UpdatedAt     wireTime   `json:"updated_at"`
}

func (w migrationWire) migration() Migration {
	return Migration{
		ID:            int(w.ID),
		UUID:          string(w.UUID),
		InstanceUUID:  string(w.InstanceUUID),
		SourceCompute: string(w.SourceCompute),
		DestCompute:   string(w.DestCompute),
		Status:        string(w.Status),
		MigrationType: string(w.MigrationType),
		CreatedAt:     w.CreatedAt.time(),
		UpdatedAt:     w.UpdatedAt.time(),
	}
}

// ListMigrations lists migrations, newest first:
// GET /os-migrations?instance_uuid=U&source_compute=H&migration_type=T&changes-since=S&limit=N.
// The filter is migration_type, never type (ignored by old Novas, a 400
// from 2.59). q.Limit caps the number of results (0: all pages).
//
// From 2.59 Nova filters and pages. Below 2.59 (2.53–2.58) Nova knows
// neither limit nor changes-since: they are not sent, and ChangesSince,
// MigrationType and Limit are applied here, after sorting newest first.
func (c *Client) ListMigrations(ctx context.Context, q MigrationQuery) ([]Migration, error) {
	op := "list migrations"
	v := url.Values{}
	if q.InstanceUUID != "" {
		v.Set("instance_uuid", q.InstanceUUID)
		op += " of server " + q.InstanceUUID
	}
	if q.SourceCompute != "" {
		v.Set("source_compute", q.SourceCompute)
		op += " from host " + q.SourceCompute
	}
	if q.MigrationType != "" {
		v.Set("migration_type", q.MigrationType)
		op += " type=" + q.MigrationType
	}
	sc, mv, err := c.ready(ctx)
	if err != nil {
		return nil, relabel(err, op)
	}
	paged := mv.atLeast(mvMigrationsPaging)
	if paged {
		if !q.ChangesSince.IsZero() {
			v.Set("changes-since", q.ChangesSince.UTC().Format(time.RFC3339))
		}
		if q.Limit > 0 {
			v.Set("limit", strconv.Itoa(q.Limit))
		}
	}
	var res []Migration
	seen := map[int]bool{}
	base := sc.ServiceURL("os-migrations")
	err = c.follow(ctx, request{op: op, svc: sc, method: "GET", mv: mv}, base, v, func(body []byte) (string, error) {
		var page struct {
			Migrations []migrationWire `json:"migrations"`
			Links      []link          `json:"migrations_links"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return "", err
		}
		for _, w := range page.Migrations {
			m := w.migration()
			if seen[m.ID] && m.ID != 0 {
				continue
			}
			seen[m.ID] = true
			res = append(res, m)
		}
		if !paged || (q.Limit > 0 && len(res) >= q.Limit) {
			return "", nil
		}
		return nextHref(page.Links), nil
	})
	if err != nil {
		return nil, err
	}
	if !paged {
		res = filterMigrations(res, q)
	}
	if q.Limit > 0 && len(res) > q.Limit {
		res = res[:q.Limit]
	}
	return res, nil
}

// filterMigrations applies a query the way Nova 2.59 would: type and
// changes-since (updated_at, else created_at, at or after the time),
// newest first (created_at, then id, descending).
func filterMigrations(ms []Migration, q MigrationQuery) []Migration {
	out := ms[:0]
	for _, m := range ms {
		if q.MigrationType != "" && m.MigrationType != "" && m.MigrationType != q.MigrationType {
			continue
		}
		if !q.ChangesSince.IsZero() {
			t := m.UpdatedAt
			if t.IsZero() {
				t = m.CreatedAt
			}
			if t.Before(q.ChangesSince.Truncate(time.Second)) {
				continue
			}
		}
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b Migration) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	return out
}
