package nova

import (
	"regexp"
	"strings"
)

// Credential patterns of docs/rules.md R16.1, case-insensitive.
var (
	reKeyValue = regexp.MustCompile(`(?i)\b(application_credential_secret|application_credential_id|password|passwd|token|secret|credential|auth)=[^\s&,;'"]*`)
	reJSONKey  = regexp.MustCompile(`(?i)"(application_credential_secret|application_credential_id|password|passwd|token|secret|credential)"\s*:\s*"(?:[^"\\]|\\.)*"`)
	reAuthHdr  = regexp.MustCompile(`(?i)\bauthorization\s*[:=]\s*(?:(?:bearer|basic|token)\s+)?\S+`)
	reTokenHdr = regexp.MustCompile(`(?i)\bx-(?:auth|subject)-token\s*[:=]\s*\S+`)
	reURLCreds = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@`)
)

// scrub removes anything that looks like a credential from s, then every
// literal occurrence of the known secrets (the configured password,
// application credential secret and tokens), whatever their context.
func scrub(s string, secrets []string) string {
	s = reJSONKey.ReplaceAllString(s, `"$1": "***"`)
	s = reKeyValue.ReplaceAllString(s, `$1=***`)
	s = reAuthHdr.ReplaceAllString(s, `authorization=***`)
	s = reTokenHdr.ReplaceAllString(s, `x-auth-token=***`)
	s = reURLCreds.ReplaceAllString(s, `$1***@`)
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "***")
		}
	}
	return s
}
