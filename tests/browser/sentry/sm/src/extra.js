// Only in build 2: shifts every minified position and mangled name.
export function formatPrice(value, currency) {
  const rounded = Math.round(value * 100) / 100;
  return `${rounded.toFixed(2)} ${currency}`;
}
export function describeCart(cart) {
  return cart.items.map((i) => formatPrice(i.price, "EUR")).join(", ");
}
