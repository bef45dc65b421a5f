package nova

import (
	"context"
	"strconv"
)

type aggregateWire struct {
	ID               wireInt     `json:"id"`
	Name             wireString  `json:"name"`
	AvailabilityZone wireString  `json:"availability_zone"`
	Hosts            wireStrings `json:"hosts"`
	Metadata         wireMap     `json:"metadata"`
}

// ListAggregates lists host aggregates: GET /os-aggregates.
func (c *Client) ListAggregates(ctx context.Context) ([]Aggregate, error) {
	var out struct {
		Aggregates []aggregateWire `json:"aggregates"`
	}
	if _, err := c.computeCall(ctx, "list aggregates", "GET", []string{"os-aggregates"}, nil, nil, nil, &out); err != nil {
		return nil, err
	}
	res := make([]Aggregate, 0, len(out.Aggregates))
	for _, w := range out.Aggregates {
		res = append(res, Aggregate{
			ID:               int(w.ID),
			Name:             string(w.Name),
			AvailabilityZone: string(w.AvailabilityZone),
			Hosts:            []string(w.Hosts),
			Metadata:         map[string]string(w.Metadata),
		})
	}
	return res, nil
}

// AddHostToAggregate adds a compute host to an aggregate:
// POST /os-aggregates/{id}/action {"add_host": {"host": H}}. Nova answers
// 409 when the host is already a member.
func (c *Client) AddHostToAggregate(ctx context.Context, aggregateID int, host string) error {
	id := strconv.Itoa(aggregateID)
	_, err := c.computeCall(ctx, "add host "+host+" to aggregate "+id, "POST",
		[]string{"os-aggregates", id, "action"}, nil,
		map[string]any{"add_host": map[string]string{"host": host}}, []int{200, 202}, nil)
	return err
}

// RemoveHostFromAggregate removes a compute host from an aggregate:
// POST /os-aggregates/{id}/action {"remove_host": {"host": H}}. Nova
// answers 404 when the host is not a member.
func (c *Client) RemoveHostFromAggregate(ctx context.Context, aggregateID int, host string) error {
	id := strconv.Itoa(aggregateID)
	_, err := c.computeCall(ctx, "remove host "+host+" from aggregate "+id, "POST",
		[]string{"os-aggregates", id, "action"}, nil,
		map[string]any{"remove_host": map[string]string{"host": host}}, []int{200, 202}, nil)
	return err
}
