package bmh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/ihaproject/iha/fence"
	"github.com/ihaproject/iha/pkg/config"
	"github.com/ihaproject/iha/pkg/secret"
)

// Annotation is the reboot annotation IHA owns on a BareMetalHost. Metal3
// keeps the host powered off while it (or any other reboot.metal3.io/*
// annotation) is present.
const Annotation = "reboot.metal3.io/iha"

// FieldManager names IHA in the objects' managedFields.
const FieldManager = "iha-fence"

// Resource is the BareMetalHost resource of Metal3.
var Resource = schema.GroupVersionResource{Group: "metal3.io", Version: "v1alpha1", Resource: "baremetalhosts"}

// ErrNotFound: the BareMetalHost (or the BareMetalHost resource itself) does
// not exist. Retrying will not help.
var ErrNotFound = errors.New("BareMetalHost not found")

// The merge patches. Off: the annotation keeps the host off even if someone
// sets online back to true; on: null removes the annotation.
var (
	patchOff = []byte(`{"metadata":{"annotations":{"` + Annotation + `":"{\"mode\": \"hard\"}"}},"spec":{"online":false}}`)
	patchOn  = []byte(`{"metadata":{"annotations":{"` + Annotation + `":null}},"spec":{"online":true}}`)
)

// Options tune the driver. The zero value is the production behaviour.
type Options struct {
	// PollInterval is the wait before reading the object again when a watch
	// cannot be opened or a read failed while waiting for power off
	// (default 1 s; InstanceHA polls every 3 s and never watches).
	PollInterval time.Duration
	// WatchTimeout bounds one watch while waiting for power off; the object
	// is read again after each (default 10 s).
	WatchTimeout time.Duration
	// Backoff are the waits between attempts of a request that failed with
	// a 5xx or a network error; the last one repeats until the host's
	// timeout (default 250 ms, 500 ms, 1 s, 2 s).
	Backoff []time.Duration
}

// Fencer is the BareMetalHost driver of one fencing.yaml entry.
type Fencer struct {
	name      string // fencing.yaml key
	namespace string
	bmh       string // BareMetalHost name
	apiURL    string
	token     secret.Secret // kept only to scrub it out of error text
	timeout   time.Duration
	client    dynamic.ResourceInterface
	opts      Options
	logger    *slog.Logger
}

// New builds the BareMetalHost fencer of one fencing.yaml entry (the
// fence.Constructor of agent bmh). It validates the entry and reads the CA
// bundle; it does not contact the API server.
func New(host config.FenceHost, s fence.Settings, logger *slog.Logger) (fence.Fencer, error) {
	f, err := NewWithOptions(host, s, logger, Options{})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// NewWithOptions is New with tuning options.
func NewWithOptions(host config.FenceHost, s fence.Settings, logger *slog.Logger, o Options) (*Fencer, error) {
	cfgErr := func(format string, args ...any) error {
		return &fence.Error{Host: host.Name, Driver: config.AgentBMH, Op: fence.OpConfig, Err: fmt.Errorf(format, args...)}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if host.Name == "" {
		return nil, cfgErr("entry has an empty host name")
	}
	if host.Token.IsZero() {
		return nil, cfgErr("token is required")
	}
	if host.Host == "" {
		return nil, cfgErr("host (the BareMetalHost name) is required")
	}
	if msgs := validation.IsDNS1123Subdomain(host.Host); len(msgs) > 0 {
		return nil, cfgErr("host %q is not a BareMetalHost name: %s", host.Host, strings.Join(msgs, "; "))
	}
	if host.Namespace == "" {
		return nil, cfgErr("namespace is required")
	}
	if msgs := validation.IsDNS1123Label(host.Namespace); len(msgs) > 0 {
		return nil, cfgErr("namespace %q is not a namespace: %s", host.Namespace, strings.Join(msgs, "; "))
	}
	apiURL := host.APIURL
	if apiURL == "" {
		apiURL = config.DefaultBMHAPIURL
	}
	u, err := url.Parse(apiURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		// Never quote the URL: it might carry user info.
		return nil, cfgErr("api_url is not an http(s) URL without user info")
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.WatchTimeout <= 0 {
		o.WatchTimeout = 10 * time.Second
	}
	if len(o.Backoff) == 0 {
		o.Backoff = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
	}
	timeout := host.Timeout
	if timeout <= 0 {
		timeout = s.Timeout
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}

	cfg := &rest.Config{
		Host:        apiURL,
		BearerToken: host.Token.Reveal(),
		UserAgent:   "iha-fence-bmh",
		Timeout:     timeout,
		// Fencing many hosts at once must not queue behind client-go's
		// default 5 requests per second.
		QPS:            50,
		Burst:          100,
		WarningHandler: rest.NoWarnings{},
	}
	if u.Scheme == "https" {
		caFile := host.CAFile
		if caFile == "" {
			caFile = config.DefaultBMHCAFile
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, cfgErr("ca_file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, cfgErr("ca_file %s holds no PEM certificate", caFile)
		}
		cfg.CAData = pem
	} else {
		logger.Warn("bmh over plain HTTP: the bearer token crosses the network in clear; use https",
			"host", host.Name, "address", apiURL)
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		// client-go's configuration errors name fields, not the token;
		// scrub anyway.
		return nil, cfgErr("kubernetes client: %s", fence.Scrub(err.Error(), host.Token))
	}
	return &Fencer{
		name:      host.Name,
		namespace: host.Namespace,
		bmh:       host.Host,
		apiURL:    apiURL,
		token:     host.Token,
		timeout:   timeout,
		client:    dc.Resource(Resource).Namespace(host.Namespace),
		opts:      o,
		logger:    logger,
	}, nil
}

// Driver returns "bmh".
func (f *Fencer) Driver() string { return config.AgentBMH }

// Address is where the BareMetalHost is (without credentials).
func (f *Fencer) Address() string {
	return "bmh " + f.namespace + "/" + f.bmh + " at " + f.apiURL
}

// String describes the fencer without credentials (what %v prints).
func (f *Fencer) String() string { return "bmh fencer for " + f.name + ": " + f.Address() }

// GoString is what %#v prints: the same, so that no field is dumped by a
// stray %#v or a panic.
func (f *Fencer) GoString() string { return f.String() }

// PowerOff merge-patches spec.online=false and the reboot annotation, then
// waits until status.poweredOn reads false, for at most the host's timeout.
// The patch is sent even when the host already reads off: the annotation is
// what keeps it off. Only a status the baremetal-operator wrote confirms
// the host is off; a BareMetalHost without status.poweredOn is never
// reported fenced.
func (f *Fencer) PowerOff(ctx context.Context) error {
	start := time.Now()
	f.logger.InfoContext(ctx, "bmh power off", "host", f.name, "phase", "fencing", "address", f.Address())
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var obj *unstructured.Unstructured
	err := f.retry(ctx, dctx, fence.OpPowerOff, func(c context.Context) error {
		o, err := f.client.Patch(c, f.bmh, types.MergePatchType, patchOff, metav1.PatchOptions{FieldManager: FieldManager})
		if err != nil {
			return err
		}
		obj = o
		return nil
	})
	if err != nil {
		return err
	}
	if powered, ok := poweredOn(obj); !ok || powered {
		if err := f.waitOff(ctx, dctx, obj.GetResourceVersion(), seen(powered, ok)); err != nil {
			return err
		}
	}
	f.logger.InfoContext(ctx, "bmh power off confirmed", "host", f.name, "phase", "fenced",
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitOff watches the BareMetalHost from resourceVersion rv until
// status.poweredOn is false. When the watch ends or cannot be opened, the
// object is read again (every PollInterval); read errors other than auth
// and not-found are tolerated until dctx ends, as InstanceHA tolerates them.
func (f *Fencer) waitOff(ctx, dctx context.Context, rv, last string) error {
	// last is what was last seen, for the timeout message.
	var lastErr error
	canWatch := true
	for {
		if rv != "" && canWatch {
			began := time.Now()
			off, werr := f.watchOff(dctx, rv, &last)
			if off {
				return nil
			}
			if werr != nil {
				if ctx.Err() == nil && dctx.Err() == nil {
					f.logger.DebugContext(ctx, "bmh watch failed; polling instead", "host", f.name, "err", f.scrubbed(werr))
				}
				canWatch = false
			} else if time.Since(began) < f.opts.PollInterval {
				// A watch that ends at once (resource version too old, a
				// proxy closing it) must not turn into a busy loop.
				if err := fence.Sleep(dctx, f.opts.PollInterval); err != nil {
					return f.waitFailed(ctx, last, lastErr)
				}
			}
		}
		if dctx.Err() != nil {
			return f.waitFailed(ctx, last, lastErr)
		}
		obj, err := f.client.Get(dctx, f.bmh, metav1.GetOptions{})
		if err == nil {
			lastErr = nil
			rv = obj.GetResourceVersion()
			powered, ok := poweredOn(obj)
			if ok && !powered {
				return nil
			}
			last = seen(powered, ok)
			if canWatch {
				continue
			}
		} else {
			if ctx.Err() != nil || dctx.Err() != nil {
				return f.waitFailed(ctx, last, lastErr)
			}
			if sentinel := classify(err); sentinel == fence.ErrAuth || sentinel == ErrNotFound {
				return f.fail(ctx, fence.OpPowerOff, f.describe(err))
			}
			lastErr = f.describe(err)
			f.logger.DebugContext(ctx, "bmh read failed while waiting for power off", "host", f.name, "err", f.scrubbed(err))
		}
		if err := fence.Sleep(dctx, f.opts.PollInterval); err != nil {
			return f.waitFailed(ctx, last, lastErr)
		}
	}
}

// watchOff watches the one object from rv for at most WatchTimeout. It
// reports whether status.poweredOn became false; an error means the watch
// could not be used at all.
func (f *Fencer) watchOff(dctx context.Context, rv string, last *string) (bool, error) {
	wctx, cancel := context.WithTimeout(dctx, f.opts.WatchTimeout)
	defer cancel()
	secs := int64(f.opts.WatchTimeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	w, err := f.client.Watch(wctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", f.bmh).String(),
		ResourceVersion: rv,
		TimeoutSeconds:  &secs,
	})
	if err != nil {
		return false, err
	}
	defer w.Stop()
	for {
		select {
		case <-wctx.Done():
			return false, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return false, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				obj, isObj := ev.Object.(*unstructured.Unstructured)
				if !isObj {
					continue
				}
				powered, ok := poweredOn(obj)
				if ok && !powered {
					return true, nil
				}
				*last = seen(powered, ok)
			case watch.Deleted:
				// The next read answers not found.
				return false, nil
			case watch.Error:
				// Typically "resource version too old": read again.
				return false, nil
			}
		}
	}
}

// seen describes a status.poweredOn reading for messages.
func seen(powered, ok bool) string {
	switch {
	case !ok:
		return "no status.poweredOn"
	case powered:
		return "status.poweredOn true"
	}
	return "status.poweredOn false"
}

// waitFailed is the error of a wait that ended without off: the caller's
// context error, or ErrTimeout.
func (f *Fencer) waitFailed(ctx context.Context, last string, lastErr error) error {
	if ctx.Err() != nil {
		return f.fail(ctx, fence.OpPowerOff, lastErr)
	}
	if last == "" {
		last = "no status read"
	}
	msg := fmt.Sprintf("%v: BareMetalHost %s/%s still not off after %v (%s)", fence.ErrTimeout, f.namespace, f.bmh, f.timeout, last)
	if lastErr != nil {
		msg += "; last read: " + f.scrubbed(lastErr)
	}
	return &fence.Error{Host: f.name, Driver: config.AgentBMH, Op: fence.OpPowerOff,
		Err: &fence.SanitizedError{Msg: msg, Is: fence.ErrTimeout}}
}

// PowerOn removes the reboot annotation and sets spec.online=true, and
// returns once the API server accepted the patch; the baremetal-operator
// powers the host on later.
func (f *Fencer) PowerOn(ctx context.Context) error {
	f.logger.InfoContext(ctx, "bmh power on", "host", f.name, "phase", "unfencing", "address", f.Address())
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return f.retry(ctx, dctx, fence.OpPowerOn, func(c context.Context) error {
		_, err := f.client.Patch(c, f.bmh, types.MergePatchType, patchOn, metav1.PatchOptions{FieldManager: FieldManager})
		return err
	})
}

// PowerState reads status.poweredOn. A BareMetalHost without it (not yet
// inspected by the operator) is PowerUnknown.
func (f *Fencer) PowerState(ctx context.Context) (fence.PowerState, error) {
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var obj *unstructured.Unstructured
	err := f.retry(ctx, dctx, fence.OpPowerState, func(c context.Context) error {
		o, err := f.client.Get(c, f.bmh, metav1.GetOptions{})
		if err != nil {
			return err
		}
		obj = o
		return nil
	})
	if err != nil {
		return fence.PowerUnknown, err
	}
	powered, ok := poweredOn(obj)
	switch {
	case !ok:
		return fence.PowerUnknown, nil
	case powered:
		return fence.PowerOn, nil
	}
	return fence.PowerOff, nil
}

// poweredOn reads status.poweredOn; ok is false when it is absent or not a
// boolean.
func poweredOn(obj *unstructured.Unstructured) (powered, ok bool) {
	if obj == nil {
		return false, false
	}
	v, found, err := unstructured.NestedBool(obj.Object, "status", "poweredOn")
	if err != nil || !found {
		return false, false
	}
	return v, true
}

// retry runs attempt until it succeeds, fails with an error that is not
// worth retrying (auth, not found, TLS verification, other refusals), or
// dctx (the host's timeout under ctx) ends. Retryable errors (5xx, network)
// wait Backoff in between.
func (f *Fencer) retry(ctx, dctx context.Context, op string, attempt func(context.Context) error) error {
	var last error
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return f.fail(ctx, op, last)
		}
		if dctx.Err() != nil {
			if last == nil {
				last = fmt.Errorf("%w: no answer within %v", fence.ErrUnreachable, f.timeout)
			}
			return f.fail(ctx, op, last)
		}
		err := attempt(dctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return f.fail(ctx, op, f.describe(err))
		}
		if dctx.Err() != nil && isContextError(err) {
			if last == nil {
				last = fmt.Errorf("%w: no answer within %v", fence.ErrUnreachable, f.timeout)
			}
			return f.fail(ctx, op, last)
		}
		last = f.describe(err)
		if !isRetryable(err) {
			return f.fail(ctx, op, last)
		}
		d := f.opts.Backoff[min(i, len(f.opts.Backoff)-1)]
		f.logger.WarnContext(ctx, "bmh request failed; retrying", "host", f.name, "op", op,
			"attempt", i+1, "backoff", d, "err", f.scrubbed(last))
		if err := fence.Sleep(dctx, d); err != nil && ctx.Err() != nil {
			return f.fail(ctx, op, last)
		}
	}
}

// describe turns a client-go error into a short message that still
// matches the fence sentinels with errors.Is.
func (f *Fencer) describe(err error) error {
	sentinel := classify(err)
	switch {
	case sentinel == ErrNotFound && isMissingKind(err):
		return &fence.SanitizedError{Msg: fmt.Sprintf("%v: the API server at %s does not serve %s (is the Metal3 BareMetalHost CRD installed?)",
			ErrNotFound, f.apiURL, Resource.GroupResource()), Is: ErrNotFound}
	case sentinel == ErrNotFound:
		return &fence.SanitizedError{Msg: fmt.Sprintf("%v: no BareMetalHost %s in namespace %s", ErrNotFound, f.bmh, f.namespace), Is: ErrNotFound}
	case sentinel != nil:
		return &fence.SanitizedError{Msg: sentinel.Error() + ": " + f.scrubbed(err), Is: sentinel}
	}
	return &fence.SanitizedError{Msg: f.scrubbed(err), Is: err}
}

// fail builds the *fence.Error of op: the context's error when ctx is done,
// else err (already described).
func (f *Fencer) fail(ctx context.Context, op string, err error) error {
	fe := &fence.Error{Host: f.name, Driver: config.AgentBMH, Op: op}
	if cerr := ctx.Err(); cerr != nil {
		msg := cerr.Error()
		if err != nil {
			msg += " (last: " + f.scrubbed(err) + ")"
		}
		fe.Err = &fence.SanitizedError{Msg: msg, Is: cerr}
		return fe
	}
	if err == nil {
		err = errors.New("failed")
	}
	fe.Err = err
	return fe
}

func (f *Fencer) scrubbed(err error) string {
	if err == nil {
		return ""
	}
	return fence.Scrub(err.Error(), f.token)
}
