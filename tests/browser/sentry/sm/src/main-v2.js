import { describeCart } from "./extra.js";
import { runCheckout } from "./run.js";

window.describeCart = describeCart;
window.runCheckout = runCheckout;
