package nova

import (
	"context"
	"encoding/json"
	"net/url"
)

// glanceCore are the image schema's own properties; every other
// string-valued top-level key of a Glance v2 image is a custom property.
var glanceCore = map[string]bool{
	"id": true, "name": true, "status": true, "visibility": true, "protected": true,
	"checksum": true, "os_hash_algo": true, "os_hash_value": true, "owner": true,
	"size": true, "virtual_size": true, "min_ram": true, "min_disk": true,
	"created_at": true, "updated_at": true, "tags": true, "disk_format": true,
	"container_format": true, "file": true, "self": true, "schema": true,
	"direct_url": true, "locations": true, "os_hidden": true,
}

// ListImages lists the images Glance shows this identity, all pages:
// GET /v2/images?limit=1000 following "next". Tags are returned as they are,
// Properties holds every string-valued custom property.
func (c *Client) ListImages(ctx context.Context) ([]Image, error) {
	const op = "list images"
	if err := c.authenticated(ctx); err != nil {
		return nil, relabel(err, op)
	}
	c.mu.RLock()
	sc, ierr := c.image, c.imageErr
	c.mu.RUnlock()
	if sc == nil {
		return nil, &APIError{Op: op, Err: &cleanError{msg: c.scrub("no image endpoint: " + errText(ierr)), cause: ierr}}
	}
	var res []Image
	seen := map[string]bool{}
	base := sc.ServiceURL("images")
	err := c.follow(ctx, request{op: op, svc: sc, method: "GET"}, base, url.Values{"limit": {"1000"}}, func(body []byte) (string, error) {
		var page struct {
			Images []map[string]json.RawMessage `json:"images"`
			Next   string                       `json:"next"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return "", err
		}
		for _, raw := range page.Images {
			img := image(raw)
			if seen[img.ID] {
				continue
			}
			seen[img.ID] = true
			res = append(res, img)
		}
		return page.Next, nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// GetImage reads one image: GET /v2/images/{id}. Glance's list leaves out
// hidden images (os_hidden) and those of other projects that are not
// shared, but a server may run on one; InstanceHA looks such a server's
// image up by id (R6.6).
func (c *Client) GetImage(ctx context.Context, id string) (Image, error) {
	const op = "get image"
	if err := c.authenticated(ctx); err != nil {
		return Image{}, relabel(err, op)
	}
	c.mu.RLock()
	sc, ierr := c.image, c.imageErr
	c.mu.RUnlock()
	if sc == nil {
		return Image{}, &APIError{Op: op, Err: &cleanError{msg: c.scrub("no image endpoint: " + errText(ierr)), cause: ierr}}
	}
	var raw map[string]json.RawMessage
	var img Image
	err := c.follow(ctx, request{op: op, svc: sc, method: "GET"}, sc.ServiceURL("images", url.PathEscape(id)), nil, func(body []byte) (string, error) {
		if err := json.Unmarshal(body, &raw); err != nil {
			return "", err
		}
		img = image(raw)
		return "", nil
	})
	if err != nil {
		return Image{}, err
	}
	return img, nil
}

func image(raw map[string]json.RawMessage) Image {
	var tags wireStrings
	_ = tags.UnmarshalJSON(raw["tags"])
	var hidden wireBool
	_ = json.Unmarshal(raw["os_hidden"], &hidden)
	img := Image{ID: rawToString(raw["id"]), Name: rawToString(raw["name"]), Tags: []string(tags), Hidden: bool(hidden)}
	for k, v := range raw {
		if glanceCore[k] {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			continue
		}
		if img.Properties == nil {
			img.Properties = map[string]string{}
		}
		img.Properties[k] = s
	}
	return img
}

func errText(err error) string {
	if err == nil {
		return "unknown"
	}
	return err.Error()
}
