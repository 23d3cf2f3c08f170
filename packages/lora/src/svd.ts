import { PeftError, mulberry32 } from '@peftjs/core';

/**
 * A thin singular value decomposition in float64: a [m, n] (row-major) = U · diag(S) · Vᵀ with
 * U [m, k], S [k] (descending, ≥ 0), V [n, k], k = min(m, n); all row-major.
 */
export interface Svd {
  m: number;
  n: number;
  k: number;
  u: Float64Array;
  s: Float64Array;
  v: Float64Array;
}

const EPS = 2.220446049250313e-16;

/**
 * One-sided Jacobi (Hestenes) SVD: the columns of a [m, n] (m ≥ n) are rotated pairwise until they are
 * orthogonal; their norms are the singular values. Accurate to a few ulps of σ_max in float64, and
 * O(sweeps · m · n²): meant for adapter-sized matrices (a delta weight of a layer), not for huge ones.
 */
function jacobiTall(a: Float64Array, m: number, n: number): Svd {
  // columns of A and of V, each a Float64Array (column-major access is what the rotations need)
  const cols: Float64Array[] = [];
  for (let j = 0; j < n; j++) {
    const c = new Float64Array(m);
    for (let i = 0; i < m; i++) c[i] = a[i * n + j];
    cols.push(c);
  }
  const vcols: Float64Array[] = [];
  for (let j = 0; j < n; j++) {
    const c = new Float64Array(n);
    c[j] = 1;
    vcols.push(c);
  }
  const tol = 10 * m * EPS;
  for (let sweep = 0; sweep < 80; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const cp = cols[p];
        const cq = cols[q];
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < m; i++) {
          alpha += cp[i] * cp[i];
          beta += cq[i] * cq[i];
          gamma += cp[i] * cq[i];
        }
        if (gamma === 0 || Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const x = cp[i];
          const y = cq[i];
          cp[i] = c * x - s * y;
          cq[i] = s * x + c * y;
        }
        const vp = vcols[p];
        const vq = vcols[q];
        for (let i = 0; i < n; i++) {
          const x = vp[i];
          const y = vq[i];
          vp[i] = c * x - s * y;
          vq[i] = s * x + c * y;
        }
      }
    }
    if (!rotated) break;
    if (sweep === 79) throw new PeftError('INVALID_ARGUMENT', `svd: one-sided Jacobi did not converge on a [${m}, ${n}] matrix (NaN or Inf in the delta weight?)`);
  }
  const norms = cols.map((c) => Math.sqrt(c.reduce((acc, x) => acc + x * x, 0)));
  const order = [...norms.keys()].sort((i, j) => norms[j] - norms[i]);
  const k = n;
  const u = new Float64Array(m * k);
  const s = new Float64Array(k);
  const v = new Float64Array(n * k);
  order.forEach((src, dst) => {
    const sigma = norms[src];
    s[dst] = sigma;
    const c = cols[src];
    // a zero singular value has no defined left vector; it is left zero (U·S is what is used)
    if (sigma > 0) for (let i = 0; i < m; i++) u[i * k + dst] = c[i] / sigma;
    const vc = vcols[src];
    for (let i = 0; i < n; i++) v[i * k + dst] = vc[i];
  });
  return { m, n, k, u, s, v };
}

function transpose(a: Float64Array, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
  return t;
}

/** The thin SVD of a [m, n] row-major float64 matrix (see Svd). Non-finite entries are refused. */
export function svd(a: Float64Array, m: number, n: number): Svd {
  if (a.length !== m * n) throw new PeftError('INVALID_ARGUMENT', `svd: ${a.length} values for a [${m}, ${n}] matrix`);
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new PeftError('INVALID_ARGUMENT', `svd: the matrix holds NaN or Inf (entry ${i} of [${m}, ${n}])`);
  }
  if (m >= n) return jacobiTall(a, m, n);
  const r = jacobiTall(transpose(a, m, n), n, m);
  return { m, n, k: r.k, u: r.v, s: r.s, v: r.u };
}

/**
 * Thin Householder QR of a [m, c] (m ≥ c) row-major matrix: a = Q·R with Q [m, c] orthonormal columns
 * and R [c, c] upper triangular.
 */
function qr(a: Float64Array, m: number, c: number): { q: Float64Array; r: Float64Array } {
  const w = Float64Array.from(a);
  const vs: Float64Array[] = [];
  for (let j = 0; j < c; j++) {
    let norm = 0;
    for (let i = j; i < m; i++) norm += w[i * c + j] ** 2;
    norm = Math.sqrt(norm);
    const v = new Float64Array(m);
    if (norm === 0) {
      vs.push(v);
      continue;
    }
    const alpha = w[j * c + j] > 0 ? -norm : norm;
    for (let i = j; i < m; i++) v[i] = w[i * c + j];
    v[j] -= alpha;
    let vn = 0;
    for (let i = j; i < m; i++) vn += v[i] * v[i];
    if (vn > 0) {
      for (let col = j; col < c; col++) {
        let dot = 0;
        for (let i = j; i < m; i++) dot += v[i] * w[i * c + col];
        const f = (2 * dot) / vn;
        for (let i = j; i < m; i++) w[i * c + col] -= f * v[i];
      }
    }
    vs.push(vn > 0 ? v.map((x) => x / Math.sqrt(vn)) : v);
  }
  const r = new Float64Array(c * c);
  for (let i = 0; i < c; i++) for (let j = i; j < c; j++) r[i * c + j] = w[i * c + j];
  // Q = H_0 … H_{c-1} applied to the first c columns of the identity
  const q = new Float64Array(m * c);
  for (let j = 0; j < c; j++) q[j * c + j] = 1;
  for (let h = c - 1; h >= 0; h--) {
    const v = vs[h];
    for (let col = 0; col < c; col++) {
      let dot = 0;
      for (let i = h; i < m; i++) dot += v[i] * q[i * c + col];
      if (dot === 0) continue;
      for (let i = h; i < m; i++) q[i * c + col] -= 2 * dot * v[i];
    }
  }
  return { q, r };
}

function matmul(a: Float64Array, b: Float64Array, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      if (x === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += x * b[p * n + j];
    }
  }
  return out;
}

/**
 * The SVD of a product P·Q (P [m, c], Q [c, n], c ≤ min(m, n)) without forming it: QR of P and of Qᵀ,
 * then the SVD of the c×c core. The nonzero singular triplets equal those of the full product's SVD
 * (up to signs); k = c. This is how a weighted sum of LoRA updates ΣᵢwᵢBᵢAᵢ = [w₁B₁ …]·[A₁; …] is
 * decomposed for the `svd` combination at the cost of the ranks, not of the layer's size.
 */
export function svdOfProduct(p: Float64Array, q: Float64Array, m: number, c: number, n: number): Svd {
  if (c > Math.min(m, n)) return svd(matmul(p, q, m, c, n), m, n);
  const a = qr(p, m, c);
  const b = qr(transpose(q, c, n), n, c);
  const core = matmul(a.r, transpose(b.r, c, c), c, c, c);
  const inner = svd(core, c, c);
  return { m, n, k: c, u: matmul(a.q, inner.u, m, c, c), s: inner.s, v: matmul(b.q, inner.v, n, c, c) };
}

/** aᵀ·q for a [m, n], q [m, l]: [n, l]. */
function matmulTN(a: Float64Array, q: Float64Array, m: number, n: number, l: number): Float64Array {
  const out = new Float64Array(n * l);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      const x = a[i * n + j];
      if (x === 0) continue;
      const o = j * l;
      const r = i * l;
      for (let c = 0; c < l; c++) out[o + c] += x * q[r + c];
    }
  }
  return out;
}

/** Widths up to which the full Jacobi SVD is used (a second or so at this size). */
export const FULL_SVD_MAX_WIDTH = 256;

/**
 * The `k` largest singular triplets of a [m, n] (U [m, k], S [k], V [n, k]), what a rank-k truncation needs.
 * Small matrices take the full Jacobi SVD; wider ones a block subspace iteration in float64 (k plus as many
 * spare columns, re-orthonormalised by QR each step) run until every kept triplet's residual
 * ‖A·vⱼ − σⱼ·uⱼ‖ and ‖Aᵀ·uⱼ − σⱼ·vⱼ‖ is below 1e-10·σ₁, then the Jacobi SVD of the small projected matrix;
 * if that does not happen within the step budget the full SVD is taken after all (slow, never wrong).
 */
export function truncatedSvd(a: Float64Array, m: number, n: number, k: number, opts: { maxSteps?: number } = {}): Svd {
  const width = Math.min(m, n);
  if (k > width) throw new PeftError('INVALID_ARGUMENT', `svd: ${k} singular triplets asked of a [${m}, ${n}] matrix`);
  const l = Math.min(width, 2 * k + 8);
  const take = (d: Svd): Svd => {
    const u = new Float64Array(m * k);
    const v = new Float64Array(n * k);
    for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) u[i * k + j] = d.u[i * d.k + j];
    for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) v[i * k + j] = d.v[i * d.k + j];
    return { m, n, k, u, s: d.s.slice(0, k), v };
  };
  if (width <= FULL_SVD_MAX_WIDTH || 2 * l >= width) return take(svd(a, m, n));
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new PeftError('INVALID_ARGUMENT', `svd: the matrix holds NaN or Inf (entry ${i} of [${m}, ${n}])`);
  }
  const rand = mulberry32(0x5eed);
  let z: Float64Array = Float64Array.from({ length: n * l }, () => rand() - 0.5);
  const maxSteps = opts.maxSteps ?? 400;
  for (let step = 1; step <= maxSteps; step++) {
    const q = qr(matmul(a, z, m, n, l), m, l).q; // [m, l]
    z = qr(matmulTN(a, q, m, n, l), n, l).q; // [n, l]
    if (step % 4 !== 0) continue;
    // Rayleigh–Ritz: A ≈ Q·(QᵀA); the SVD of the small Qᵀ·A [l, n] through its transpose
    const q2 = qr(matmul(a, z, m, n, l), m, l).q;
    const small = svd(transpose(matmulTN(a, q2, m, n, l), n, l), l, n); // (QᵀA) = Us·S·Vsᵀ
    const u = matmul(q2, small.u, m, l, small.k);
    const cand: Svd = { m, n, k: small.k, u, s: small.s, v: small.v };
    if (converged(a, cand, k)) return take(cand);
    z = small.v.length === n * l ? small.v : z;
  }
  return take(svd(a, m, n));
}

function converged(a: Float64Array, d: Svd, k: number): boolean {
  const { m, n } = d;
  const tol = 1e-10 * d.s[0];
  if (d.s[0] === 0) return true;
  for (let j = 0; j < k; j++) {
    let r1 = 0;
    for (let i = 0; i < m; i++) {
      let x = 0;
      for (let p = 0; p < n; p++) x += a[i * n + p] * d.v[p * d.k + j];
      r1 += (x - d.s[j] * d.u[i * d.k + j]) ** 2;
    }
    if (Math.sqrt(r1) > tol) return false;
    let r2 = 0;
    for (let p = 0; p < n; p++) {
      let x = 0;
      for (let i = 0; i < m; i++) x += a[i * n + p] * d.u[i * d.k + j];
      r2 += (x - d.s[j] * d.v[p * d.k + j]) ** 2;
    }
    if (Math.sqrt(r2) > tol) return false;
  }
  return true;
}
