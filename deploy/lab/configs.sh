# shellcheck shell=bash
# Writes every daemon's configuration under $ETC. Sourced by up.sh after
# lib.sh; nothing here starts a process.

write_configs() {
  local n=$1 i
  mkdir -p "$ETC/nova" "$ETC/placement" "$ETC/glance" "$LAB_DIR/glance/images" \
    "$LAB_DIR/rabbitmq" "$LAB_DIR/locks"

  cat >"$ETC/nova/api-paste.ini" <<PASTE
# Nova's upstream api-paste.ini without osprofiler and with the lab's
# token-copying noauth middleware (shims/iha_lab_noauth.py).
[composite:osapi_compute]
use = call:nova.api.openstack.urlmap:urlmap_factory
/: oscomputeversions
/v2: oscomputeversion_legacy_v2
/v2.1: oscomputeversion_v2
/v2/+: openstack_compute_api_v21_legacy_v2_compatible
/v2.1/+: openstack_compute_api_v21

[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
noauth2 = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit ihanoauth osapi_compute_app_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit ihanoauth osapi_compute_app_v21

[composite:openstack_compute_api_v21_legacy_v2_compatible]
use = call:nova.api.auth:pipeline_factory_v21
noauth2 = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit ihanoauth legacy_v2_compatible osapi_compute_app_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit ihanoauth legacy_v2_compatible osapi_compute_app_v21

[filter:request_log]
paste.filter_factory = nova.api.openstack.requestlog:RequestLog.factory

[filter:compute_req_id]
paste.filter_factory = nova.api.compute_req_id:ComputeReqIdMiddleware.factory

[filter:faultwrap]
paste.filter_factory = nova.api.openstack:FaultWrapper.factory

[filter:ihanoauth]
paste.filter_factory = iha_lab_noauth:NoAuthWithToken.factory

[filter:sizelimit]
paste.filter_factory = oslo_middleware:RequestBodySizeLimiter.factory

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory

[filter:legacy_v2_compatible]
paste.filter_factory = nova.api.openstack:LegacyV2CompatibleWrapper.factory

[app:osapi_compute_app_v21]
paste.app_factory = nova.api.openstack.compute:APIRouterV21.factory

[pipeline:oscomputeversions]
pipeline = cors faultwrap request_log http_proxy_to_wsgi oscomputeversionapp

[pipeline:oscomputeversion_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi oscomputeversionapp_v2

[pipeline:oscomputeversion_legacy_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi legacy_v2_compatible oscomputeversionapp_v2

[app:oscomputeversionapp]
paste.app_factory = nova.api.openstack.compute.versions:Versions.factory

[app:oscomputeversionapp_v2]
paste.app_factory = nova.api.openstack.compute.versions:VersionsV2.factory

[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = nova
PASTE

  # Settings every Nova process shares. No DB here: the computes must not
  # have DB credentials ("No DB access allowed in nova-compute").
  local common
  common=$(cat <<COMMON
transport_url = $(rabbit_url)
my_ip = 127.0.0.1
report_interval = $LAB_REPORT_INTERVAL
service_down_time = $LAB_SERVICE_DOWN_TIME
compute_driver = fake.FakeDriver
use_stderr = true
debug = ${LAB_DEBUG:-false}
default_log_levels = amqp=WARN,amqplib=WARN,oslo.messaging=INFO,oslo_messaging=INFO,sqlalchemy=WARN,stevedore=WARN,urllib3.connectionpool=WARN,keystoneauth=WARN,oslo_policy=WARN

[oslo_concurrency]
lock_path = $LAB_DIR/locks

[placement]
auth_type = admin_token
endpoint = http://127.0.0.1:$LAB_PLACEMENT_PORT
token = admin:admin

[glance]
api_servers = http://127.0.0.1:$LAB_GLANCE_PORT

[neutron]
auth_type = admin_token
endpoint_override = http://127.0.0.1:$LAB_NEUTRON_PORT
token = admin:admin

[cinder]
os_region_name = RegionOne

[quota]
instances = -1
cores = -1
ram = -1
server_groups = -1
server_group_members = -1

[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 0

[notifications]
notification_format = unversioned

[oslo_messaging_notifications]
driver = noop
COMMON
)

  cat >"$ETC/nova/nova.conf" <<NOVA
[DEFAULT]
host = lab-controller
state_path = $LAB_DIR/nova
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = $LAB_NOVA_PORT
osapi_compute_workers = 1
$common

[api]
auth_strategy = noauth2

[wsgi]
api_paste_config = $ETC/nova/api-paste.ini

[api_database]
connection = $(db_url nova_api)

[database]
connection = $(db_url nova)

[conductor]
workers = 1

[scheduler]
workers = 1
# The scheduler maps new computes itself (no nova-manage run per start).
discover_hosts_in_cells_interval = ${LAB_DISCOVER_INTERVAL:-5}

[filter_scheduler]
shuffle_best_same_weighed_hosts = true
NOVA

  for ((i = 1; i <= n; i++)); do
    local host="lab-compute-$i"
    mkdir -p "$LAB_DIR/nova-$host/instances"
    cat >"$ETC/nova/$host.conf" <<COMPUTE
[DEFAULT]
host = $host
state_path = $LAB_DIR/nova-$host
instances_path = $LAB_DIR/nova-$host/instances
$common
COMPUTE
  done

  cat >"$ETC/placement/placement.conf" <<PLACEMENT
[DEFAULT]
debug = false
use_stderr = true

[api]
auth_strategy = noauth2

[placement_database]
connection = $(db_url placement)
PLACEMENT

  cat >"$ETC/glance/glance-api.conf" <<GLANCE
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $LAB_GLANCE_PORT
workers = 0
use_stderr = true
debug = false

[database]
connection = $(db_url glance)

[paste_deploy]
config_file = $ETC/glance/glance-api-paste.ini

[glance_store]
stores = file
default_store = file
filesystem_store_datadir = $LAB_DIR/glance/images

[oslo_policy]
policy_file = $ETC/glance/policy.yaml

[oslo_concurrency]
lock_path = $LAB_DIR/locks
GLANCE

  cat >"$ETC/glance/policy.yaml" <<'POLICY'
# Without Keystone the request context has no roles: let it make images public.
"publicize_image": ""
POLICY

  cat >"$ETC/glance/glance-api-paste.ini" <<'GPASTE'
# Glance's upstream pipeline without osprofiler, unauthenticated.
[pipeline:glance-api]
pipeline = cors healthcheck http_proxy_to_wsgi versionnegotiation unauthenticated-context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:healthcheck]
paste.filter_factory = oslo_middleware:Healthcheck.factory
backends = disable_by_file
disable_by_file_path = /nonexistent/glance-healthcheck-disable

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory

[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = glance
oslo_config_program = glance-api
GPASTE

  cat >"$LAB_DIR/rabbitmq/rabbitmq.conf" <<RABBIT
listeners.tcp.default = 127.0.0.1:$LAB_RABBIT_PORT
loopback_users.guest = true
log.console = true
log.file = false
RABBIT
  echo '[].' >"$LAB_DIR/rabbitmq/enabled_plugins"
}
