"""No-auth middleware for the lab's nova-api.

Nova's stock noauth2 leaves the request context without a token, so every
call Nova makes to Glance on the user's behalf fails (keystoneauth
AuthorizationFailure, HTTP 500 on boot). This subclass copies X-Auth-Token
into the context and gives user ``admin`` the admin role, so that
``X-Auth-Token: admin:admin`` is an admin with a usable token.
"""
import webob.dec

from nova.api import wsgi
from nova.api.openstack import auth


class NoAuthWithToken(auth.NoAuthMiddleware):
    @webob.dec.wsgify(RequestClass=wsgi.Request)
    def __call__(self, req):
        res = self.base_call(req, True, always_admin=False)
        ctx = req.environ.get("nova.context")
        if ctx is not None:
            ctx.auth_token = req.headers.get("X-Auth-Token")
            if ctx.user_id == "admin":
                ctx.roles = ["admin", "member", "reader"]
            else:
                ctx.roles = ["member", "reader"]
        return res
