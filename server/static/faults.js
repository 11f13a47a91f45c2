// The demo's "Drop connection" button: a network fault injected under the client's feet.
//
// The client (/js/tokenwire.js) takes its fetch, WebSocket and EventSource as options. The
// demo hands each panel's client versions that remember the connection opened last, so the
// page can cut it mid-stream the way a network failure would, and the client must notice
// and resume on its own, from the last seq it has:
//
//   fetch (poll, chunked)  the request is aborted with a TypeError, the error fetch raises
//                          when the network fails; the browser closes the TCP connection.
//   WebSocket              the socket is closed (code 4000); the client opens a new one and
//                          subscribes from its position.
//   EventSource            the source is closed and an `error` event dispatched, as when the
//                          browser gives up; the client asks where the stream is and reopens.

/** Connection factories for one client, and `drop()` to cut the connection opened last. */
export function droppable() {
  let cut = null;

  const fetchWithCut = (input, init = {}) => {
    const controller = new AbortController();
    const outer = init.signal;
    if (outer?.aborted) controller.abort(outer.reason);
    else outer?.addEventListener("abort", () => controller.abort(outer.reason), { once: true });
    cut = () => controller.abort(new TypeError("the demo dropped this connection"));
    return fetch(input, { ...init, signal: controller.signal });
  };

  class DroppableWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      cut = () => {
        if (this.readyState <= WebSocket.OPEN) this.close(4000, "dropped by the demo");
      };
    }
  }

  class DroppableEventSource extends EventSource {
    constructor(...args) {
      super(...args);
      cut = () => {
        if (this.readyState === EventSource.CLOSED) return;
        this.close();
        this.dispatchEvent(new Event("error"));
      };
    }
  }

  return {
    fetch: fetchWithCut,
    WebSocket: DroppableWebSocket,
    EventSource: DroppableEventSource,
    /** Cut the connection opened last. */
    drop: () => cut?.(),
  };
}
