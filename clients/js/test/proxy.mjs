// Test helpers shared by the JS client's live-server tests.
import { once } from "node:events";
import net from "node:net";

/** A loopback TCP proxy; `cutNext()` drops the next connection that gets server bytes. */
export async function startProxy(targetUrl) {
  const target = new URL(targetUrl);
  const sockets = new Set();
  let armed = false;
  const proxy = {
    cuts: 0,
    cutNext() {
      armed = true;
    },
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    upstream.on("data", (data) => {
      if (armed) {
        armed = false;
        proxy.cuts += 1;
        drop(); // these bytes are lost: the client must get them again by resuming
      } else {
        client.write(data);
      }
    });
    client.on("data", (data) => upstream.write(data));
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  proxy.close = async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, "close");
  };
  return proxy;
}
