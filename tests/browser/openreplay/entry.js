// Bundled by the test with esbuild into one classic script: the unmodified tracker from npm.
import Tracker from "@openreplay/tracker";

window.OpenReplayTracker = Tracker;
