// Package nova is IHA's thin client for the OpenStack Compute (Nova) and
// Image (Glance v2) APIs, built on gophercloud v2.
//
// What it owns:
//   - authentication: Keystone through gophercloud, lazily on first use (a
//     leader whose Keystone or Nova is down at start keeps retrying instead of
//     exiting), one re-authentication and retry on HTTP 401; or, for labs
//     without Keystone (config.Cloud.NoAuth), a fixed X-Auth-Token sent
//     straight to the configured endpoints;
//   - microversion negotiation: min(what Nova offers, 2.94, Options cap);
//     below 2.53 the client refuses to work (service UUIDs and the atomic
//     PUT /os-services/{id} need it);
//   - the HTTP form of every call the leader makes (docs/rules.md
//     §18) and the decoding of Nova's and Glance's answers into the small
//     types of types.go;
//   - turning every failure into an *APIError with the operation, the HTTP
//     status, the request id and Nova's message scrubbed of credentials.
//
// Features above 2.53 degrade gracefully when Nova is older:
//   - 2.47: servers embed their flavor's extra specs; below it
//     Server.FlavorExtraSpecs is nil and Server.FlavorID is set instead;
//   - 2.59: os-migrations paging and changes-since; below it the client
//     does not send limit or changes-since and filters on ChangesSince,
//     MigrationType and Limit itself; Migration.UUID stays empty;
//   - 2.61: flavors embed their extra specs; below it ListFlavors makes one
//     GET /flavors/{id}/os-extra_specs per flavor;
//   - 2.73: lock reasons; below it Lock sends no reason and
//     Server.LockedReason stays empty.
//
// What it must never do:
//   - decide anything: no retries beyond the single re-authentication, no
//     policy, no filtering of what the caller asked for; the leader decides;
//   - send "force" or "onSharedStorage" with an evacuation (forcing a target
//     bypasses the scheduler, and a wrong shared-storage guess destroys disks);
//   - use a microversion above 2.94 (from 2.95 an evacuated server arrives
//     stopped instead of keeping its state);
//   - let a password, token or secret reach an error, a log line or a panic.
//
// A Client is safe for concurrent use.
package nova
