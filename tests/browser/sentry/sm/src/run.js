import { checkout } from "./app.js";

export function runCheckout() {
  return checkout({ items: [{ price: 250 }, { price: 300 }] });
}
