import { runCheckout } from "./run.js";

window.runCheckout = runCheckout;
