// Server-sent event feeds that survive dropped connections, and the stream log's offsets.

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;

/**
 * One SSE endpoint, followed until it sends `closed`.
 *
 * A dropped connection is resumed by the browser itself with a Last-Event-ID header. When the
 * browser gives up (the server answered with an error, e.g. 503 while restarting), or the
 * server asks us to come back (`overflow`, `shutdown`), the feed reconnects with backoff to
 * `url()`, which the caller computes from what it has already shown.
 */
export class LiveFeed {
  constructor({ url, onValue, onClosed, onState }) {
    this.url = url;
    this.onValue = onValue;
    this.onClosed = onClosed ?? (() => {});
    this.onState = onState ?? (() => {});
    this.source = null;
    this.timer = null;
    this.retryMs = RETRY_FIRST_MS;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  connect() {
    this.timer = null;
    const source = new EventSource(this.url());
    this.source = source;
    source.addEventListener("open", () => {
      this.retryMs = RETRY_FIRST_MS;
      this.onState("live");
    });
    source.addEventListener("message", (event) => {
      this.onValue(JSON.parse(event.data), event.lastEventId);
    });
    // The server ends the response after `closed`: without close() the browser would reconnect.
    source.addEventListener("closed", (event) => {
      this.stop();
      this.onState("finished");
      this.onClosed(JSON.parse(event.data));
    });
    // Too slow a reader (overflow) or a server going down (shutdown): come back for the rest.
    for (const name of ["overflow", "shutdown"]) {
      source.addEventListener(name, () => this.reconnect(name === "overflow" ? 0 : this.backoff()));
    }
    source.addEventListener("error", () => {
      if (this.stopped || source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.reconnect(this.backoff());
      } else {
        this.onState("reconnecting");
      }
    });
  }

  backoff() {
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    return delay;
  }

  /** Drop this connection and open a new one from `url()` after `delayMs`. */
  reconnect(delayMs = 0) {
    if (this.stopped) return;
    this.source?.close();
    this.source = null;
    this.onState("reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }
}

/**
 * The stream log's position: each value is taken exactly once, in offset order.
 *
 * A value below `next` was already shown (a repeat after a reconnect) and is dropped; a value
 * above it means one was missed, so the feed is reopened from `next` instead of leaving a gap.
 */
export class StreamCursor {
  constructor() {
    this.next = 0;
  }

  /** "take", "repeat" or "gap" for the value at `offset`. */
  judge(offset) {
    if (offset < this.next) return "repeat";
    if (offset > this.next) return "gap";
    this.next += 1;
    return "take";
  }
}
