// Sees micro services the way standard NATS tooling does: nats.js and its services client.
// Usage: node nats_js_client.mjs NATS_URL NAMESPACE
// Prints one JSON object: what discovery showed, and what plain request/reply returned.
import { connect } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";

const [url, namespace] = process.argv.slice(2);
const nc = await connect({ servers: url });
const client = new Svcm(nc).client({ strategy: "timer", maxWait: 1000 });

async function collect(iterator) {
  const found = [];
  for await (const item of await iterator) {
    if (item.metadata?.["micro.namespace"] === namespace) found.push(item);
  }
  return found;
}

const pings = await collect(client.ping());
const infos = await collect(client.info("bank"));
const endpoints = Object.fromEntries(
  infos[0].endpoints.map((endpoint) => [endpoint.metadata["micro.command"], endpoint]),
);

// plain request/reply on the subject discovery reported, no micro library involved
const added = await nc.request(endpoints["math.add"].subject, JSON.stringify({ a: 2, b: 3 }), {
  timeout: 2000,
});
const refused = await nc.request(endpoints["open account"].subject, JSON.stringify({}), {
  timeout: 2000,
});
const stats = await collect(client.stats("bank"));

console.log(
  JSON.stringify({
    pings,
    infos,
    stats,
    reply: added.json(),
    error: {
      message: refused.headers?.get("Nats-Service-Error"),
      code: refused.headers?.get("Nats-Service-Error-Code"),
      body: refused.json(),
    },
  }),
);
await nc.close();
