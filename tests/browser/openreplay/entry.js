// Bundled by the test with esbuild into one classic script: the unmodified tracker from
// npm, and a small React Flow canvas (flow.jsx) the page can mount.
import Tracker from "@openreplay/tracker";
import { mountFlow } from "./flow.jsx";

window.OpenReplayTracker = Tracker;
window.mountFlow = mountFlow;
