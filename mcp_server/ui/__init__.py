"""The control room: a local web app where the operator sees what runs, what changed, what waits,
what agents tried and were refused, and approves or refuses from there.

``cli`` registers ``buttress ui``; ``app`` is the Starlette application and its guard; ``auth`` the
one-time sign-in links, sessions and CSRF tokens; ``pages`` the registry of pages and operator acts;
``charts`` the geometry of its pictures. Templates live in ``templates/``, the stylesheet and the one
small script in ``static/``. Every read and act goes through the runtime (``runtime.api.RuntimeAPI``),
audited as the operator.
"""
