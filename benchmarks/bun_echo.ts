// The Bun echo server of benchmarks/echo.py (`--servers ... bun`): the same
// protocol as the Python servers, on a free loopback port announced as "PORT n".
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("", { status: 400 });
  },
  websocket: {
    idleTimeout: 0,
    message(ws, message) {
      ws.send(message);
    },
  },
});
console.log(`PORT ${server.port}`);
