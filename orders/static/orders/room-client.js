// A reference client of the venue room (docs/protocol.md), for screens and the dashboard:
// it resumes after every reconnect (?after=<last seq>), comes back after a random delay
// when the server restarts (1012) or loses Redis under a live connection (1011), backs off
// while refused, and sends heartbeats.
//
//   import { RoomClient } from "/static/orders/room-client.js";
//   const client = new RoomClient({
//     urls: ["wss://ops.example/ws/venues/12/"], token: "iwv_...",
//     onEvent: (frame) => show(frame.event, frame.data),
//     reload: async () => { const s = await fetchOpenOrders(); showAll(s.orders); return s.seq; },
//   });
//   client.start();

const FINAL_CLOSE_CODES = new Set([4401, 4403, 4404]);
const SERVICE_RESTART = 1012;
// "Try again later": a live connection closed with it lost the channel layer (Redis), and so
// did every other connection of its process, at the same moment.
const SERVER_ERROR = 1011;

export class RoomClient {
  constructor({
    urls,
    token = "",
    after = null,
    onEvent = () => {},
    onState = () => {},
    reload = null,
    heartbeatSeconds = 15,
    baseDelay = 2, // the first retry after a dropped connection: 1-2 s (orders/room_client.py)
    maxDelay = 10, // back within 10 s of the service (orders/room_client.py says why)
    restartSpread = 5,
  }) {
    this.urls = urls;
    this.token = token;
    this.seq = after; // the number of the last event had; null: nothing yet
    this.onEvent = onEvent;
    this.onState = onState; // "connecting", "replaying", "live", "waiting", "stopped"
    this.reload = reload;
    this.heartbeatSeconds = heartbeatSeconds;
    this.baseDelay = baseDelay;
    this.maxDelay = maxDelay;
    this.restartSpread = restartSpread;
    this.attempt = 0;
    this.serverIndex = 0;
    this.connects = 0;
    this.resyncs = 0;
    this.rttMs = null;
    this.socket = null;
    this.stopped = true;
    this.reloading = false;
    this.held = [];
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.retry);
    if (this.socket) this.socket.close(1000);
    this.onState("stopped");
  }

  url() {
    const base = this.urls[this.serverIndex % this.urls.length];
    const query = new URLSearchParams();
    if (this.token) query.set("token", this.token);
    if (this.seq !== null) query.set("after", String(this.seq));
    const text = query.toString();
    return text ? `${base}?${text}` : base;
  }

  connect() {
    this.onState("connecting");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    this.welcomed = false;
    socket.onmessage = (message) => this.handle(JSON.parse(message.data));
    socket.onclose = (close) => this.closed(socket, close.code);
  }

  handle(frame) {
    switch (frame.type) {
      case "welcome":
        this.connects += 1;
        this.welcomed = true;
        this.attempt = 0;
        if (this.seq === null) {
          this.seq = frame.seq; // a first connect is live at once
          this.onState("live");
        } else {
          this.onState("replaying");
        }
        this.startHeartbeat();
        break;
      case "event":
        if (this.reloading) {
          this.held.push(frame); // applied once the reloaded state says where it stands
          return;
        }
        if (typeof frame.seq === "number" && this.seq !== null && frame.seq <= this.seq) return;
        if (typeof frame.seq === "number") this.seq = frame.seq;
        this.onEvent(frame);
        break;
      case "live":
        this.onState("live");
        break;
      case "resync":
        this.resyncs += 1;
        this.resync(frame);
        break;
      case "pong":
        if (typeof frame.ts === "number") this.rttMs = Math.max(0, performance.now() - frame.ts);
        break;
      default:
        break; // errors and frames of later versions: nothing to do here
    }
  }

  async resync(frame) {
    // Events that arrive while the state reloads are held, then those after the reloaded
    // state's number applied in order: none lost under the reload, none applied twice.
    this.reloading = true;
    this.held = [];
    try {
      this.seq = this.reload ? await this.reload() : frame.seq;
    } finally {
      this.reloading = false;
    }
    const held = this.held;
    this.held = [];
    for (const event of held) this.handle(event);
    this.onState("live");
  }

  startHeartbeat() {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
      const ping = { type: "ping", ts: performance.now() };
      if (this.rttMs !== null) ping.rttMs = Math.min(this.rttMs, 60000);
      this.socket.send(JSON.stringify(ping));
    }, this.heartbeatSeconds * 1000);
  }

  closed(socket, code) {
    if (socket !== this.socket) return;
    clearInterval(this.heartbeat);
    if (this.stopped || FINAL_CLOSE_CODES.has(code)) {
      this.onState("stopped");
      return;
    }
    let delay;
    if (code === SERVICE_RESTART) {
      this.attempt = 0;
      delay = Math.random() * this.restartSpread; // every screen of the process comes back
    } else if (code === SERVER_ERROR && this.welcomed) {
      this.attempt = 0;
      delay = Math.random() * this.maxDelay; // the process lost Redis for all its screens
    } else if (code === SERVER_ERROR) {
      // Refused (Redis down): sooner cannot succeed sooner (orders/room_client.py says why).
      delay = this.maxDelay / 2 + Math.random() * (this.maxDelay / 2);
    } else {
      const ceiling = Math.min(this.maxDelay, this.baseDelay * 2 ** this.attempt);
      this.attempt += 1;
      delay = ceiling / 2 + Math.random() * (ceiling / 2);
    }
    this.serverIndex += 1; // another process, as a balancer would pick
    this.onState("waiting");
    this.retry = setTimeout(() => this.connect(), delay * 1000);
  }
}
