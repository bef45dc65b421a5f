package nova

import (
	"context"
	"net/url"
)

type serviceWire struct {
	ID             wireString `json:"id"`
	Host           wireString `json:"host"`
	Binary         wireString `json:"binary"`
	Zone           wireString `json:"zone"`
	Status         wireString `json:"status"`
	State          wireString `json:"state"`
	ForcedDown     wireBool   `json:"forced_down"`
	DisabledReason wireString `json:"disabled_reason"`
	UpdatedAt      wireTime   `json:"updated_at"`
}

func (w serviceWire) service() Service {
	return Service{
		ID:             string(w.ID),
		Host:           string(w.Host),
		Binary:         string(w.Binary),
		Zone:           string(w.Zone),
		Status:         string(w.Status),
		State:          string(w.State),
		ForcedDown:     bool(w.ForcedDown),
		DisabledReason: string(w.DisabledReason),
		UpdatedAt:      w.UpdatedAt.time(),
	}
}

// ListServices lists the services with the given binary ("" for all):
// GET /os-services?binary=B.
func (c *Client) ListServices(ctx context.Context, binary string) ([]Service, error) {
	return c.listServices(ctx, "list services binary="+binary, "", binary)
}

// ListServicesOnHost lists the services of one host:
// GET /os-services?host=H&binary=B. Nova matches the host name exactly.
func (c *Client) ListServicesOnHost(ctx context.Context, host, binary string) ([]Service, error) {
	return c.listServices(ctx, "list services on host "+host+" binary="+binary, host, binary)
}

func (c *Client) listServices(ctx context.Context, op, host, binary string) ([]Service, error) {
	q := url.Values{}
	if binary != "" {
		q.Set("binary", binary)
	}
	if host != "" {
		q.Set("host", host)
	}
	var out struct {
		Services []serviceWire `json:"services"`
	}
	if _, err := c.computeCall(ctx, op, "GET", []string{"os-services"}, q, nil, nil, &out); err != nil {
		return nil, err
	}
	res := make([]Service, 0, len(out.Services))
	for _, w := range out.Services {
		res = append(res, w.service())
	}
	return res, nil
}

// UpdateService changes a service in one PUT /os-services/{id} (2.53): the
// fields set in u are sent together, so Nova applies them atomically.
// Nova bumps the service's updated_at on every such update.
func (c *Client) UpdateService(ctx context.Context, id string, u ServiceUpdate) (Service, error) {
	body := map[string]any{}
	if u.ForcedDown != nil {
		body["forced_down"] = *u.ForcedDown
	}
	if u.Status != nil {
		body["status"] = *u.Status
	}
	if u.DisabledReason != nil {
		body["disabled_reason"] = *u.DisabledReason
	}
	var out struct {
		Service serviceWire `json:"service"`
	}
	if _, err := c.computeCall(ctx, "update service "+id, "PUT", []string{"os-services", id}, nil, body, []int{200}, &out); err != nil {
		return Service{}, err
	}
	return out.Service.service(), nil
}
