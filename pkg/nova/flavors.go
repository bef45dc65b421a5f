package nova

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
)

type flavorWire struct {
	ID         wireString      `json:"id"`
	Name       wireString      `json:"name"`
	ExtraSpecs json.RawMessage `json:"extra_specs"` // absent below 2.61
}

// ListFlavors lists every flavor, public and private, with its extra specs:
// GET /flavors/detail?is_public=None, all pages. From 2.61 the extra specs
// come embedded; below, or when Nova leaves them out (policy), one
// GET /flavors/{id}/os-extra_specs per flavor. A flavor deleted between the
// listing and its extra-specs read (404) is left out.
func (c *Client) ListFlavors(ctx context.Context) ([]Flavor, error) {
	const op = "list flavors"
	type item struct {
		f        Flavor
		embedded bool
	}
	var items []item
	seen := map[string]bool{}
	err := c.pages(ctx, op, []string{"flavors", "detail"}, url.Values{"is_public": {"None"}}, func(body []byte) (string, error) {
		var page struct {
			Flavors []flavorWire `json:"flavors"`
			Links   []link       `json:"flavors_links"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return "", err
		}
		for _, w := range page.Flavors {
			if seen[string(w.ID)] {
				continue
			}
			seen[string(w.ID)] = true
			it := item{f: Flavor{ID: string(w.ID), Name: string(w.Name)}}
			if len(w.ExtraSpecs) > 0 && string(w.ExtraSpecs) != "null" {
				var m wireMap
				_ = m.UnmarshalJSON(w.ExtraSpecs)
				it.f.ExtraSpecs, it.embedded = map[string]string(m), true
			}
			items = append(items, it)
		}
		return nextHref(page.Links), nil
	})
	if err != nil {
		return nil, err
	}
	res := make([]Flavor, 0, len(items))
	for _, it := range items {
		if !it.embedded {
			var out struct {
				ExtraSpecs wireMap `json:"extra_specs"`
			}
			_, err := c.computeCall(ctx, "get extra specs of flavor "+it.f.ID, "GET",
				[]string{"flavors", it.f.ID, "os-extra_specs"}, nil, nil, nil, &out)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			it.f.ExtraSpecs = map[string]string(out.ExtraSpecs)
		}
		res = append(res, it.f)
	}
	return res, nil
}
