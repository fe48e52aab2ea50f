// The official KurrentDB Node client against a server micro wrote to: it reads what micro
// appended, appends with every kind of expected revision, trips a wrong expected version, and
// follows $all with a catch-up subscription from a position. Prints what it saw as JSON.
//
//   node kurrentdb_node_client.mjs <connection string> <stream micro wrote> <stream to write>
import {
  ANY,
  BACKWARDS,
  END,
  FORWARDS,
  KurrentDBClient,
  NO_STREAM,
  START,
  STREAM_EXISTS,
  StreamNotFoundError,
  WrongExpectedVersionError,
  excludeSystemEvents,
  jsonEvent,
} from "@kurrent/kurrentdb-client";

const [url, microStream, nodeStream] = process.argv.slice(2);
const client = KurrentDBClient.connectionString(url);

// BigInts do not survive JSON: every revision and position goes out as a string.
const plain = (value) =>
  JSON.parse(JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v)));

function recorded(resolved) {
  const event = resolved.event;
  return {
    streamId: event.streamId,
    id: event.id,
    type: event.type,
    revision: event.revision,
    isJson: event.isJson,
    data: event.data,
    metadata: event.metadata,
    position: event.position,
    created: event.created instanceof Date ? event.created.toISOString() : null,
  };
}

async function collect(iterable) {
  const found = [];
  for await (const resolved of iterable) found.push(recorded(resolved));
  return found;
}

async function expectError(run) {
  try {
    await run();
    return null;
  } catch (error) {
    return {
      name: error.constructor.name,
      wrongExpectedVersion: error instanceof WrongExpectedVersionError,
      streamNotFound: error instanceof StreamNotFoundError,
      streamName: error.streamName,
      expectedState: error.expectedState,
      actualState: error.actualState,
      message: error.message,
    };
  }
}

const added = (id, amount) =>
  jsonEvent({ type: "Added", data: { id, amount }, metadata: { origin: "node" } });
const tally = nodeStream.replace(/^tally-/, "");

const seen = {};
seen.microForwards = await collect(
  client.readStream(microStream, { direction: FORWARDS, fromRevision: START }),
);
seen.microBackwards = await collect(
  client.readStream(microStream, { direction: BACKWARDS, fromRevision: END, maxCount: 1 }),
);
seen.microFromRevision = await collect(
  client.readStream(microStream, { direction: FORWARDS, fromRevision: 1n, maxCount: 10 }),
);
seen.allBefore = await collect(
  client.readAll({ direction: FORWARDS, fromPosition: START, filter: excludeSystemEvents() }),
);
seen.allUnfiltered = await collect(client.readAll({ direction: FORWARDS, fromPosition: START }));

seen.appends = [];
const append = async (kind, events, streamState) => {
  const result = await client.appendToStream(nodeStream, events, { streamState });
  seen.appends.push({ kind, ...result });
};
await append("no_stream", [added(tally, 1), added(tally, 2)], NO_STREAM);
await append("revision", [added(tally, 3)], 1n);
await append("stream_exists", [added(tally, 4)], STREAM_EXISTS);
await append("any", [added(tally, 5)], ANY);

seen.wrongNoStream = await expectError(() =>
  client.appendToStream(nodeStream, [added(tally, 100)], { streamState: NO_STREAM }),
);
seen.wrongRevision = await expectError(() =>
  client.appendToStream(nodeStream, [added(tally, 100)], { streamState: 1n }),
);
seen.wrongExists = await expectError(() =>
  client.appendToStream("tally-never-written", [added("never-written", 100)], {
    streamState: STREAM_EXISTS,
  }),
);
seen.notFound = await expectError(() => collect(client.readStream("tally-never-written")));

seen.nodeBackwards = await collect(
  client.readStream(nodeStream, { direction: BACKWARDS, fromRevision: END, maxCount: 2 }),
);
seen.allBackwards = await collect(
  client.readAll({ direction: BACKWARDS, fromPosition: END, maxCount: 3 }),
);

// A catch-up subscription from the position of micro's first event: it starts after it.
const from = seen.microForwards[0].position;
const subscription = client.subscribeToAll({
  fromPosition: { commit: BigInt(from.commit), prepare: BigInt(from.prepare) },
  filter: excludeSystemEvents(),
});
const wanted = seen.microForwards.length - 1 + 5;
seen.subscribed = [];
const timer = setTimeout(() => subscription.unsubscribe(), 20000);
for await (const resolved of subscription) {
  seen.subscribed.push(recorded(resolved));
  if (seen.subscribed.length === wanted) break;
}
clearTimeout(timer);
await subscription.unsubscribe();

await client.dispose();
process.stdout.write(JSON.stringify(plain(seen)));
