// The Bun server of benchmarks/fanout.py (`--servers ... bun`): subscribers
// connect to /sub, the publisher to /pub; "?" asks for the subscriber count,
// anything else is published to the room. Announces its port as "PORT n".
const TOPIC = "room";
const server = Bun.serve<string>({
  hostname: "127.0.0.1",
  port: 0,
  fetch(req, server) {
    const role = new URL(req.url).pathname.slice(1);
    if (server.upgrade(req, { data: role })) return;
    return new Response("", { status: 400 });
  },
  websocket: {
    idleTimeout: 0,
    open(ws) {
      if (ws.data === "sub") ws.subscribe(TOPIC);
    },
    message(ws, message) {
      if (message === "?") ws.send(String(server.subscriberCount(TOPIC)));
      else server.publish(TOPIC, message);
    },
  },
});
console.log(`PORT ${server.port}`);
