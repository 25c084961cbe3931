// Staying live: the event feed (long-poll) re-reads only the views an event touched; the
// services view follows a Consul blocking query (it wakes on check changes); a status read
// every 5 s shows whether this member answers, and while the members view is open, SWIM's
// view of the others (suspect within a few seconds).

let liveGeneration = 0;

async function followFeed(generation) {
  let after = 0, epoch = null, delay = 1000;
  while (generation === liveGeneration) {
    try {
      const query = "/v1/events?after=" + after + (after ? "&wait=30s" : "") + (epoch !== null ? "&epoch=" + epoch : "");
      const page = await get(query);
      if (generation !== liveGeneration) return;
      delay = 1000;
      epoch = page.epoch;
      after = page.next_after;
      if (!page.events.length) continue;
      const views = new Set(["events"]);
      for (const e of page.events) {
        events.push(e);
        kinds.add(e.kind);
        touched(e.kind).forEach(v => views.add(v));
      }
      if (events.length > 1000) events = events.slice(-1000);
      summary();
      if (views.has(current)) render(current);
    } catch (e) {
      if (e.status === 410) { after = 0; epoch = null; events = []; continue; }
      if (!(e instanceof ApiError)) setConnection(false);
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
  }
}

async function followServices(generation) {
  let index = 0;
  while (generation === liveGeneration) {
    try {
      const { headers } = await api("/v1/catalog/services?index=" + index + "&wait=30s");
      const next = Number(headers.get("x-consul-index") || 0);
      if (generation !== liveGeneration) return;
      if (next !== index && index !== 0 && current === "services") render("services");
      index = next;
    } catch (e) {
      await sleep(3000);
    }
  }
}

async function heartbeat(generation) {
  while (generation === liveGeneration) {
    await sleep(5000);
    await summary();
    if (current === "members") render("members");
  }
}

function restartLive() {
  liveGeneration += 1;
  followFeed(liveGeneration);
  followServices(liveGeneration);
  heartbeat(liveGeneration);
}

route();
summary();
restartLive();
