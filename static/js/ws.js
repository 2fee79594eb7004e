// The one WebSocket to /api/v1/ws: connect, heartbeat, reconnect with
// exponential backoff + jitter, and resume with ?since=<last event id>.

const MAX_BACKOFF_MS = 30_000;
const BASE_BACKOFF_MS = 500;

export class Socket {
  /**
   * opts.getToken(): Promise<string>      fresh access token (refreshes when needed)
   * opts.onFrame(frame)                   every parsed server frame, in order
   * opts.onStatus(status, info)           'connecting' | 'open' | 'reconnecting' | 'closed'
   * opts.onAuthProblem(): Promise<void>   called when connecting keeps failing (token may be bad)
   */
  constructor(opts) {
    this.opts = opts;
    this.ws = null;
    this.lastEventId = null; // null: fresh connect without ?since
    this.status = 'closed';
    this.attempt = 0;
    this.stopped = true;
    this.timer = null;
    this.pingTimer = null;
    this.watchdog = null;
    this.heartbeatMs = 30_000;
    this.helloSeen = false;
    this.nextRetryAt = null;
    this._onOnline = () => this.retryNow();
    this._onVisible = () => { if (document.visibilityState === 'visible' && this.status === 'reconnecting') this.retryNow(); };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this._onOnline);
    document.addEventListener('visibilitychange', this._onVisible);
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.clearHeartbeat();
    window.removeEventListener('online', this._onOnline);
    document.removeEventListener('visibilitychange', this._onVisible);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try { ws.close(1000, 'bye'); } catch { /* ignore */ }
    }
    this.setStatus('closed');
  }

  /** Drop the current connection and reconnect at once (e.g. after a token change). */
  retryNow() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.ws && this.ws.readyState <= 1 && this.status === 'open') return;
    this.attempt = 0;
    if (this.ws) { this.killCurrent(); }
    this.connect();
  }

  isOpen() { return !!this.ws && this.ws.readyState === WebSocket.OPEN && this.helloSeen; }

  /** Send a frame; returns false when not connected (caller keeps it for later). */
  send(frame) {
    if (!this.isOpen()) return false;
    try { this.ws.send(JSON.stringify(frame)); return true; } catch { return false; }
  }

  setStatus(s, info) {
    this.status = s;
    if (this.opts.onStatus) this.opts.onStatus(s, info);
  }

  async connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.setStatus(this.attempt === 0 && !this.everOpened ? 'connecting' : 'reconnecting', { attempt: this.attempt });
    let token;
    try {
      token = await this.opts.getToken();
    } catch (e) {
      if (e && e.status === 401) return; // session gone; app signs out
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ token });
    if (this.lastEventId !== null && this.lastEventId !== undefined) q.set('since', String(this.lastEventId));
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/api/v1/ws?${q}`);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.helloSeen = false;
    ws.onmessage = (e) => {
      this.armWatchdog();
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      if (frame.type === 'hello') {
        this.helloSeen = true;
        this.everOpened = true;
        this.attempt = 0;
        if (frame.heartbeat_ms > 0) this.heartbeatMs = frame.heartbeat_ms;
        if (this.lastEventId === null || this.lastEventId === undefined) this.lastEventId = frame.last_event_id;
        this.startHeartbeat();
        this.setStatus('open');
      } else if (frame.type === 'resync_required') {
        // Caller reloads everything via REST; continue from the head announced in hello.
        this.lastEventId = this.helloHead !== undefined ? this.helloHead : this.lastEventId;
      }
      if (frame.type === 'hello') this.helloHead = frame.last_event_id;
      if (typeof frame.event_id === 'number' && (this.lastEventId === null || frame.event_id > this.lastEventId)) {
        this.lastEventId = frame.event_id;
      }
      if (frame.type === 'pong') return;
      try { this.opts.onFrame(frame); } catch (err) { console.warn('frame handler failed', err); }
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearHeartbeat();
      const neverOpened = !this.helloSeen;
      this.helloSeen = false;
      if (this.stopped) return;
      // A connection refused before hello may be an expired/revoked token.
      // So may a 1008 close (session revoked, or flooding): check the token over REST.
      if (((neverOpened && this.attempt >= 1) || e.code === 1008) && this.opts.onAuthProblem) {
        this.opts.onAuthProblem().catch(() => {});
      }
      this.scheduleReconnect(e.code);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  killCurrent() {
    const ws = this.ws;
    this.ws = null;
    this.clearHeartbeat();
    this.helloSeen = false;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try { ws.close(4000, 'reconnect'); } catch { /* ignore */ }
    }
  }

  scheduleReconnect(code) {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const exp = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** this.attempt);
    // "equal jitter": half fixed, half random, so clients do not reconnect in lockstep.
    let delay = exp / 2 + Math.random() * exp / 2;
    if (code === 1008) delay = Math.max(delay, 5_000); // policy (rate limit): back off harder
    this.attempt++;
    this.nextRetryAt = Date.now() + delay;
    this.setStatus('reconnecting', { attempt: this.attempt, retryAt: this.nextRetryAt });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  startHeartbeat() {
    this.clearHeartbeat();
    this.pingTimer = setInterval(() => this.send({ type: 'ping' }), this.heartbeatMs);
    this.armWatchdog();
  }

  armWatchdog() {
    clearTimeout(this.watchdog);
    if (this.stopped) return;
    // No frame (not even a pong) for two heartbeats: the link is dead.
    this.watchdog = setTimeout(() => {
      if (this.ws) {
        const ws = this.ws;
        this.killCurrent();
        ws.onclose = null;
        this.scheduleReconnect();
      }
    }, this.heartbeatMs * 2 + 10_000);
  }

  clearHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.watchdog);
    this.pingTimer = null;
    this.watchdog = null;
  }
}
