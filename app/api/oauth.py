"""The OAuth connect flow: GET /v1/oauth/{slug}/authorize and /v1/oauth/{slug}/callback.

``authorize`` is an API call (bearer JWT); it also sets the browser-binding cookie, so the
frontend must call it with credentials included from the browser that will follow the
authorization URL. ``callback`` is where the broker sends that browser back: no bearer token
(browsers do not send one on a redirect), the state and the cookie identify the flow, and
every answer is a redirect to the flow's ``return_to``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from app import errors
from app.api import API_PREFIX
from app.api.deps import CurrentUser, State
from app.api.problems import problem_response, problem_responses
from app.schemas.oauth import OAuthAuthorization
from app.security.oauth_state import cookie_name

router = APIRouter(prefix=API_PREFIX, tags=["oauth"])

Slug = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$")]
Param = Annotated[str | None, Query(max_length=4096)]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}


@router.get(
    "/oauth/{slug}/authorize",
    name="oauth_authorize",
    responses=problem_responses(401, 422, 429),
)
async def oauth_authorize(
    slug: Slug,
    user: CurrentUser,
    state: State,
    response: Response,
    return_to: Annotated[str, Query(min_length=1, max_length=2000)],
) -> OAuthAuthorization:
    """Start connecting an OAuth broker; sets an HttpOnly cookie bound to this browser."""
    started = await state.oauth.authorize(user_id=user.user_id, slug=slug, return_to=return_to)
    cookie = started.cookie
    response.set_cookie(
        cookie.name,
        cookie.value,
        max_age=cookie.max_age,
        path=cookie.path,
        secure=cookie.secure,
        httponly=True,
        samesite="lax",
    )
    for key, value in _NO_STORE.items():
        response.headers[key] = value
    return OAuthAuthorization(
        authorization_url=started.authorization_url, expires_at=started.expires_at
    )


@router.get(
    "/oauth/{slug}/callback",
    name="oauth_callback",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        302: {
            "description": "To the flow's return_to with ?connection_id=... or ?error=<code>",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        **problem_responses(400, 422),
    },
)
async def oauth_callback(
    slug: Slug,
    request: Request,
    state: State,
    code: Param = None,
    state_param: Annotated[str | None, Query(alias="state", max_length=512)] = None,
    error: Param = None,
    iss: Param = None,
) -> Response:
    """Where the broker sends the browser back after the user decided."""
    outcome = await state.oauth.callback(
        slug=slug,
        params={"code": code, "state": state_param, "error": error, "iss": iss},
        browser_nonce=request.cookies.get(cookie_name(slug)),
    )
    answer: Response
    if outcome.location is None:
        answer = problem_response(errors.InvalidOAuthState("the OAuth state is unknown"))
    else:
        answer = RedirectResponse(outcome.location, status_code=302)
    for key, value in _NO_STORE.items():
        answer.headers[key] = value
    if outcome.cookie_path is not None:
        answer.delete_cookie(
            outcome.cookie_name,
            path=outcome.cookie_path,
            secure=outcome.cookie_secure,
            httponly=True,
            samesite="lax",
        )
    return answer
