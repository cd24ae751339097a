// The session (a token from a password login, kept in sessionStorage) and the one
// function every page calls the API through.

const KEY = 'vpcep.session';

/** An API failure: the HTTP status and the server's `error_code` / `error_msg`. */
export class ApiError extends Error {
  constructor(status, code, msg) {
    super(msg);
    this.status = status;
    this.code = code;
  }
}

let session = (() => {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
})();

let onExpired = () => {};

/** Called when the server no longer accepts the token (the app then shows the login). */
export function setExpiredHandler(fn) {
  onExpired = fn;
}

export function getSession() {
  return session;
}

export function logout() {
  session = null;
  sessionStorage.removeItem(KEY);
}

/** `project` prefix for resource paths: `/v1/{project_id}`. */
export function p(path) {
  return `/v1/${encodeURIComponent(session.projectId)}${path}`;
}

async function parse(resp) {
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function failure(resp, body) {
  if (body && typeof body === 'object' && body.error_code) {
    return new ApiError(resp.status, body.error_code, body.error_msg || '');
  }
  const msg = typeof body === 'string' && body ? body.slice(0, 300) : resp.statusText;
  return new ApiError(resp.status, `HTTP ${resp.status}`, msg);
}

/** Password login; stores the session on success. */
export async function login(name, password) {
  let resp;
  try {
    resp = await fetch('/v3/auth/tokens', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json;charset=utf-8' },
      body: JSON.stringify({
        auth: {
          identity: { methods: ['password'], password: { user: { name, password } } },
        },
      }),
    });
  } catch (e) {
    throw new ApiError(0, 'NETWORK', String(e.message || e));
  }
  const body = await parse(resp);
  if (!resp.ok) throw failure(resp, body);
  const token = resp.headers.get('X-Subject-Token');
  const tok = body && body.token;
  if (!token || !tok) throw new ApiError(resp.status, 'LOGIN', 'no token in the login response');
  session = {
    token,
    name: tok.user?.name || name,
    projectId: tok.project?.id,
    region: tok.project?.name || '',
    domainId: tok.user?.domain?.id || tok.user?.id,
    expiresAt: tok.expires_at,
  };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  return session;
}

/**
 * Calls the API with the session's token. Resolves to the parsed JSON body (null when
 * empty); rejects with an ApiError carrying the server's error code and message.
 */
export async function api(method, path, body) {
  if (!session) throw new ApiError(401, 'APIGW.0301', 'not logged in');
  const headers = { 'X-Auth-Token': session.token, Accept: 'application/json' };
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json;charset=utf-8';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'NETWORK', String(e.message || e));
  }
  const parsed = await parse(resp);
  if (!resp.ok) {
    const err = failure(resp, parsed);
    if (resp.status === 401) {
      logout();
      onExpired(err);
    }
    throw err;
  }
  return parsed;
}

/** Query string from an object, skipping empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}
