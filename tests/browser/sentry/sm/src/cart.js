// Original sources of the minified test bundles (tests/test_sourcemaps.py).
export function total(cart) {
  let sum = 0;
  for (const item of cart.items) {
    sum += item.price;
  }
  return sum;
}
