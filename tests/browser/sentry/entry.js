// The unmodified SDK, exposed to the test page.
import * as Sentry from "@sentry/browser";
window.Sentry = Sentry;
