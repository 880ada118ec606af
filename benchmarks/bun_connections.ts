// The Bun server of benchmarks/connections.py (`--servers bun bun-deflate`): the
// same protocol as the Python servers ("hi" on open, compressed echo, /stats
// collects garbage and answers the open socket count), on a free loopback port
// announced as "PORT n". DEFLATE=1 turns on `perMessageDeflate: true`.
let open = 0;
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(req, server) {
    if (new URL(req.url).pathname === "/stats") {
      Bun.gc(true);
      return new Response(String(open));
    }
    if (server.upgrade(req)) return;
    return new Response("", { status: 400 });
  },
  websocket: {
    idleTimeout: 0,
    perMessageDeflate: process.env.DEFLATE === "1",
    open(ws) {
      open += 1;
      ws.send("hi");
    },
    message(ws, message) {
      ws.send(message, true);
    },
    close() {
      open -= 1;
    },
  },
});
console.log(`PORT ${server.port}`);
