import { total } from "./cart.js";

export function checkout(cart) {
  const amount = total(cart);
  if (amount > 100) {
    throw new Error("Total too large: " + amount);
  }
  return amount;
}
