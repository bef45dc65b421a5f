package nova

import (
	"errors"
	"fmt"
	"time"
)

// Service is one row of os-services.
type Service struct {
	ID             string // UUID (microversion ≥ 2.53)
	Host           string
	Binary         string
	Zone           string
	Status         string // "enabled" | "disabled"; "UNKNOWN" for down-cell records
	State          string // "up" | "down"; "" when Nova does not say
	ForcedDown     bool
	DisabledReason string
	UpdatedAt      time.Time // zero when missing or unparsable
}

// ServiceUpdate is a PUT /os-services/{id} at 2.53; nil fields are not sent.
// Setting ForcedDown, Status and DisabledReason in one update makes the
// change atomic in Nova (no crash window between force-down and reason).
type ServiceUpdate struct {
	ForcedDown     *bool
	Status         *string // "enabled" | "disabled"
	DisabledReason *string // only with Status "disabled"
}

// Server is what the leader needs of a server.
type Server struct {
	ID               string
	Name             string
	Status           string            // ACTIVE, SHUTOFF, ERROR, …
	TaskState        string            // OS-EXT-STS:task_state, "" when null
	Host             string            // OS-EXT-SRV-ATTR:host
	ImageID          string            // "" for boot-from-volume
	FlavorID         string            // original flavor id when Nova gives it, else ""
	FlavorName       string            // embedded flavor original_name (≥ 2.47)
	FlavorExtraSpecs map[string]string // embedded (≥ 2.47)
	// FlavorSpecOrder is FlavorExtraSpecs' keys in the order Nova listed
	// them (InstanceHA decides on the first key that carries the tag).
	FlavorSpecOrder []string
	Metadata        map[string]string
	Locked          bool
	LockedReason    string // ≥ 2.73
	Updated         time.Time
}

// Migration is one row of os-migrations.
type Migration struct {
	ID            int
	UUID          string // ≥ 2.59
	InstanceUUID  string
	SourceCompute string
	DestCompute   string
	Status        string // accepted, pre-migrating, done, completed, error, failed, cancelled, …
	MigrationType string // evacuation, migration, live-migration, resize
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// MigrationQuery filters os-migrations (≥ 2.59). Empty fields are not sent.
type MigrationQuery struct {
	InstanceUUID  string
	SourceCompute string
	MigrationType string // usually "evacuation"
	ChangesSince  time.Time
	Limit         int
}

// Aggregate is a host aggregate.
type Aggregate struct {
	ID               int
	Name             string
	AvailabilityZone string
	Hosts            []string
	Metadata         map[string]string
}

// Image is a Glance v2 image as far as tags go.
type Image struct {
	ID         string
	Name       string
	Tags       []string
	Properties map[string]string // string-valued custom properties
	Hidden     bool              // os_hidden: Glance's list leaves it out
}

// Flavor is a flavor with its extra specs.
type Flavor struct {
	ID         string
	Name       string
	ExtraSpecs map[string]string
}

// Sentinel errors, matched with errors.Is on an *APIError.
var (
	ErrBadRequest   = errors.New("bad request")  // 400
	ErrUnauthorized = errors.New("unauthorized") // 401
	ErrForbidden    = errors.New("forbidden")    // 403
	ErrNotFound     = errors.New("not found")    // 404
	ErrConflict     = errors.New("conflict")     // 409
	ErrServer       = errors.New("server error") // 5xx
	ErrUnreachable  = errors.New("unreachable")  // no HTTP answer
)

// APIError is a failed Nova or Glance call.
type APIError struct {
	Op         string // e.g. "evacuate server 1234"
	StatusCode int    // 0 when there was no HTTP answer
	RequestID  string // x-openstack-request-id / x-compute-request-id
	Message    string // Nova's message, scrubbed of credentials
	Err        error  // underlying error when StatusCode is 0
}

func (e *APIError) Error() string {
	msg := e.Message
	if e.StatusCode == 0 && e.Err != nil {
		msg = e.Err.Error()
	}
	s := fmt.Sprintf("nova: %s: ", e.Op)
	if e.StatusCode != 0 {
		s += fmt.Sprintf("HTTP %d: ", e.StatusCode)
	}
	s += msg
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Is maps status codes to the sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.StatusCode == 400
	case ErrUnauthorized:
		return e.StatusCode == 401
	case ErrForbidden:
		return e.StatusCode == 403
	case ErrNotFound:
		return e.StatusCode == 404
	case ErrConflict:
		return e.StatusCode == 409
	case ErrServer:
		return e.StatusCode >= 500
	case ErrUnreachable:
		return e.StatusCode == 0
	}
	return false
}

func (e *APIError) Unwrap() error { return e.Err }
