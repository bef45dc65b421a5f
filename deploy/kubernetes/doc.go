// Package kubernetes holds IHA's manifests for Kubernetes and OpenShift
// (a kustomize base, the bmh fencing Role, an example overlay) and their
// tests: the manifests render, a real kube-apiserver accepts them
// (server-side dry-run apply), the Role is exactly what the bmh driver
// needs, and the StatefulSet's environment and mounts make a configuration
// `iha config check` accepts. It has no code of its own.
package kubernetes
