package config

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"gopkg.in/yaml.v3"

	"github.com/ihaproject/iha/pkg/secret"
)

// Auth types accepted in clouds.yaml.
const (
	authPassword    = "password"
	authV3Password  = "v3password"
	authAppCred     = "v3applicationcredential"
	authToken       = "token"
	authV3Token     = "v3token"
	AuthTypeNoAuth  = "noauth" // IHA extension: Nova without Keystone (labs)
	defaultIface    = "public"
	cloudsFileLabel = "clouds.yaml"
)

var authTypes = []string{authPassword, authV3Password, authAppCred, authToken, authV3Token, AuthTypeNoAuth}

// secretAuthKeys are the auth keys whose values are credentials.
var secretAuthKeys = map[string]bool{
	"password": true, "application_credential_secret": true, "token": true, "secret": true,
}

// loadCloud reads clouds.yaml and secure.yaml and builds the Cloud named
// name. Problems go to c.
func loadCloud(cloudsPath, securePath, name string, c *collector) Cloud {
	cloudsData, ok := readFile(cloudsPath, true, "clouds.yaml is required: it says where Nova is", c)
	if !ok {
		return Cloud{}
	}
	secureData, secureOK := readFile(securePath, false, "", c)

	cloudsEntries, ok1 := cloudEntries(cloudsPath, cloudsData, c)
	var secureEntries map[string]*yaml.Node
	ok2 := true
	if secureOK && secureData != nil {
		secureEntries, ok2 = cloudEntries(securePath, secureData, c)
	}
	if !ok1 || !ok2 {
		return Cloud{}
	}
	entry := cloudsEntries[name]
	if entry == nil {
		names := make([]string, 0, len(cloudsEntries))
		for n := range cloudsEntries {
			names = append(names, n)
		}
		sort.Strings(names)
		list := strings.Join(names, ", ")
		if list == "" {
			list = "none"
		}
		c.add(Problem{File: cloudsPath, Key: "OS_CLOUD", Value: strconv.Quote(name), Reason: "is not a cloud of this file (clouds: " + list + ")"})
		return Cloud{}
	}
	merged, err := mergeCloud(entry, secureEntries[name])
	if err != nil {
		c.add(Problem{File: securePath, Host: name, Reason: "cannot be merged over " + cloudsFileLabel})
		return Cloud{}
	}
	before := len(c.problems)
	cl := checkCloud(cloudsPath, securePath, name, merged, c)
	if len(c.problems) > before {
		return Cloud{}
	}

	// Hand the merged entry, alone, to gophercloud: other clouds of the file
	// cannot break it, and secure.yaml is already merged in.
	doc, err := yaml.Marshal(map[string]any{"clouds": map[string]any{name: merged}})
	if err != nil {
		c.add(Problem{File: cloudsPath, Host: name, Reason: "cannot be re-encoded"})
		return Cloud{}
	}
	opts := []clouds.ParseOption{
		clouds.WithCloudName(name),
		clouds.WithCloudsYAML(bytes.NewReader(doc)),
		clouds.WithSecureYAML(bytes.NewReader([]byte("clouds: {}\n"))),
		clouds.WithRegion(cl.RegionName),
		clouds.WithEndpointType(cl.Interface),
		clouds.WithPublicLocations(filepath.Join(filepath.Dir(cloudsPath), "clouds-public.yaml")),
	}
	if ca, _ := merged["cacert"].(string); ca != "" {
		opts = append(opts, clouds.WithCACertPath(ca))
	}
	ao, eo, tlsConfig, err := clouds.Parse(opts...)
	if err != nil {
		c.add(Problem{File: cloudsPath, Host: name, Reason: "rejected by the clouds.yaml parser: " + stripQuoted(err.Error())})
		return Cloud{}
	}
	cl.Endpoint = eo
	cl.TLS = tlsConfig
	return cl.WithAuthOptions(ao)
}

var backquoted = regexp.MustCompile("`[^`]*`")

// stripQuoted removes the values yaml.v2 quotes in its errors (it quotes
// the first characters of the offending value, which may be a password).
func stripQuoted(s string) string { return backquoted.ReplaceAllString(s, "`…`") }

// readFile reads path. A missing optional file gives (nil, true).
func readFile(path string, required bool, why string, c *collector) ([]byte, bool) {
	data, err := os.ReadFile(path)
	if err == nil {
		return data, true
	}
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil, true
	}
	reason := "cannot be read"
	var pe *fs.PathError
	if errors.Is(err, fs.ErrNotExist) {
		reason = "does not exist"
	} else if errors.As(err, &pe) {
		reason = "cannot be read: " + pe.Err.Error()
	}
	if why != "" {
		reason += " (" + why + ")"
	}
	c.add(Problem{File: path, Reason: reason})
	return nil, false
}

// cloudEntries returns the `clouds:` map of a clouds.yaml or secure.yaml,
// and records every secret it holds with c before anything else can print.
func cloudEntries(file string, data []byte, c *collector) (map[string]*yaml.Node, bool) {
	root, ok := parseYAML(file, data, c)
	if !ok {
		return nil, false
	}
	out := map[string]*yaml.Node{}
	if root == nil {
		return out, true
	}
	if root.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: root.Line, Reason: "must be a map with a `clouds:` key"})
		return nil, false
	}
	var cl *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if resolve(root.Content[i]).Value == "clouds" {
			cl = resolve(root.Content[i+1])
		}
	}
	if cl == nil || isNull(cl) {
		return out, true
	}
	if cl.Kind != yaml.MappingNode {
		c.add(Problem{File: file, Line: cl.Line, Key: "clouds", Reason: "is not a map"})
		return nil, false
	}
	for i := 0; i+1 < len(cl.Content); i += 2 {
		k, v := resolve(cl.Content[i]), resolve(cl.Content[i+1])
		out[k.Value] = v
		recordCloudSecrets(v, c)
	}
	return out, true
}

// recordCloudSecrets registers every credential under an entry's auth map.
func recordCloudSecrets(entry *yaml.Node, c *collector) {
	if entry.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(entry.Content); i += 2 {
		if resolve(entry.Content[i]).Value != "auth" {
			continue
		}
		auth := resolve(entry.Content[i+1])
		if auth.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(auth.Content); j += 2 {
			if secretAuthKeys[resolve(auth.Content[j]).Value] {
				recordAllScalars(resolve(auth.Content[j+1]), c)
			}
		}
	}
}

func recordAllScalars(n *yaml.Node, c *collector) {
	if n == nil {
		return
	}
	if n.Kind == yaml.ScalarNode {
		c.secret(n.Value)
	}
	for _, e := range n.Content {
		recordAllScalars(resolve(e), c)
	}
}

// mergeCloud decodes a clouds.yaml entry and lays the secure.yaml entry
// over it, recursively (secure.yaml wins), as openstacksdk does.
func mergeCloud(base, over *yaml.Node) (map[string]any, error) {
	var b, o map[string]any
	if base.Kind != yaml.MappingNode {
		return nil, errors.New("not a map")
	}
	if err := base.Decode(&b); err != nil {
		return nil, err
	}
	if over != nil && !isNull(over) {
		if over.Kind != yaml.MappingNode {
			return nil, errors.New("not a map")
		}
		if err := over.Decode(&o); err != nil {
			return nil, err
		}
	}
	return mergeMaps(b, o), nil
}

func mergeMaps(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeMaps(bm, om)
				continue
			}
		}
		if v != nil {
			out[k] = v
		}
	}
	return out
}

// checkCloud validates the merged entry and fills what it can of a Cloud.
// It never quotes a credential.
func checkCloud(cloudsPath, securePath, name string, m map[string]any, c *collector) Cloud {
	file := cloudsPath
	both := cloudsPath + " + " + filepath.Base(securePath)
	bad := func(f, key, value, reason, allowed string) {
		c.add(Problem{File: f, Host: name, Key: key, Value: value, Reason: reason, Allowed: allowed})
	}
	str := func(mm map[string]any, key, prefix string) string {
		v, ok := mm[key]
		if !ok || v == nil {
			return ""
		}
		switch t := v.(type) {
		case string:
			return strings.TrimSpace(t)
		case int, int64, uint64, float64:
			return strings.TrimSpace(strings.TrimSuffix(strconv.FormatFloat(toFloat(t), 'f', -1, 64), ".0"))
		case bool:
			if secretAuthKeys[key] {
				break
			}
			return strconv.FormatBool(t)
		}
		bad(both, prefix+key, "", "must be a single value", "")
		return ""
	}
	cl := Cloud{Name: name}

	cl.RegionName = str(m, "region_name", "")
	if cl.RegionName == "" {
		bad(file, "region_name", "", "is missing", "the region of Nova's endpoint, e.g. regionOne; InstanceHA requires it")
	}
	iface := str(m, "endpoint_type", "")
	if iface == "" {
		iface = str(m, "interface", "")
	}
	switch strings.TrimSuffix(strings.ToLower(iface), "url") {
	case "":
		cl.Interface = defaultIface
	case "public", "internal", "admin":
		cl.Interface = strings.TrimSuffix(strings.ToLower(iface), "url")
	default:
		bad(file, "interface", strconv.Quote(iface), "is not an endpoint interface", "public, internal, admin")
	}
	for _, k := range []string{"verify"} {
		if v, ok := m[k]; ok && v != nil {
			if _, isBool := v.(bool); !isBool {
				bad(file, k, "", "is not a YAML boolean", "true, false")
			}
		}
	}
	for _, k := range []string{"cacert", "cert", "key"} {
		if p := str(m, k, ""); p != "" {
			if reason := checkReadable(p); reason != "" {
				bad(file, k, strconv.Quote(p), reason, "")
			}
		}
	}

	authType := strings.ToLower(str(m, "auth_type", ""))
	if authType == "" {
		authType = authPassword
	}
	authAny, hasAuth := m["auth"]
	auth, isMap := authAny.(map[string]any)
	if !hasAuth || authAny == nil {
		bad(file, "auth", "", "is missing", "")
		return cl
	}
	if !isMap {
		bad(file, "auth", "", "is not a map", "")
		return cl
	}
	authKeys := make([]string, 0, len(auth))
	for k := range auth {
		authKeys = append(authKeys, k)
	}
	sort.Strings(authKeys)
	for _, k := range authKeys {
		switch auth[k].(type) {
		case map[string]any, []any:
			bad(both, "auth."+k, "", "must be a single value", "")
		case bool:
			if k != "allow_reauth" {
				bad(both, "auth."+k, "", "must be a string", "")
			}
		}
	}
	// get reads a scalar of auth; values of the wrong type were reported
	// by the loop above.
	get := func(k string) string {
		switch auth[k].(type) {
		case bool, map[string]any, []any:
			return ""
		}
		return str(auth, k, "auth.")
	}
	need := func(keys ...string) {
		for _, k := range keys {
			if v, present := auth[k]; present && v != nil && get(k) == "" {
				switch v.(type) {
				case bool, map[string]any, []any:
					continue // already reported
				}
			}
			if get(k) == "" {
				f := file
				if secretAuthKeys[k] {
					f = both
				}
				bad(f, "auth."+k, "", "is missing", "")
			}
		}
	}
	checkURL := func(k string) string {
		u := get(k)
		if u == "" {
			return ""
		}
		if reason := checkHTTPURL(u); reason != "" {
			shownURL := strconv.Quote(u)
			if strings.Contains(u, "@") { // may carry user:password
				shownURL = ""
			}
			bad(file, "auth."+k, shownURL, reason, "an http or https URL")
		}
		return u
	}

	// Keystone over plain HTTP (beyond this host) sends the password or
	// the token in clear.
	plainKeystone := func(u string) {
		if p, err := url.Parse(u); err == nil && p.Scheme == "http" && !loopbackHost(p.Hostname()) {
			c.warn(file + ": " + name + ": auth.auth_url http://" + p.Host + " is plain HTTP: the credentials and tokens cross the network in clear; use https")
		}
	}
	defer func() {
		if cl.NoAuth == nil {
			plainKeystone(cl.AuthURL)
		}
	}()
	switch authType {
	case authPassword, authV3Password:
		need("auth_url", "password")
		if get("username") == "" && get("user_id") == "" {
			bad(file, "auth.username", "", "is missing (or auth.user_id)", "")
		}
		cl.AuthURL = checkURL("auth_url")
	case authAppCred:
		need("auth_url", "application_credential_secret")
		if get("application_credential_id") == "" && (get("application_credential_name") == "" || (get("username") == "" && get("user_id") == "")) {
			bad(file, "auth.application_credential_id", "", "is missing (or application_credential_name with username)", "")
		}
		cl.AuthURL = checkURL("auth_url")
	case authToken, authV3Token:
		need("auth_url", "token")
		cl.AuthURL = checkURL("auth_url")
	case AuthTypeNoAuth:
		need("endpoint", "token")
		na := &NoAuth{ComputeURL: checkURL("endpoint"), ImageURL: checkURL("image_endpoint"), Token: secret.New(get("token"))}
		cl.AuthURL = na.ComputeURL
		cl.NoAuth = na
	default:
		bad(file, "auth_type", strconv.Quote(authType), "is not supported", strings.Join(authTypes, ", "))
	}
	return cl
}

func toFloat(v any) float64 {
	switch t := v.(type) {
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	case float64:
		return t
	}
	return 0
}

// loopbackHost reports whether h (a host name or an IP) is this host only.
func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// checkHTTPURL returns why u is not an http(s) URL with a host, or "".
func checkHTTPURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "is not a URL"
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return "is not an http or https URL"
	}
	if p.Host == "" {
		return "has no host"
	}
	if p.User != nil {
		return "must not carry credentials"
	}
	return ""
}
