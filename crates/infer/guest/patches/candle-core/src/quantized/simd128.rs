use super::k_quants::{
    BlockQ2K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, QK8_0,
    QK8_1, QK_K,
};
use byteorder::{ByteOrder, LittleEndian};
use half::f16;

use core::arch::wasm32::*;

#[inline(always)]
pub(crate) fn vec_dot_q4_0_q8_0(n: usize, xs: &[BlockQ4_0], ys: &[BlockQ8_0]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q4_0_q8_0: {n} is not divisible by {QK8_0}"
    );
    unsafe {
        let mut acc = f32x4_splat(0.0f32);
        for (x, y) in xs.iter().zip(ys.iter()) {
            let x1234 = v128_load(x.qs.as_ptr() as *const v128);
            let x12 = v128_and(x1234, u8x16_splat(0x0F));
            let x12 = i8x16_sub(x12, i8x16_splat(8));
            let x34 = u8x16_shr(x1234, 4);
            let x34 = i8x16_sub(x34, i8x16_splat(8));

            let x1 = i16x8_extend_low_i8x16(x12);
            let y1 = i16x8_load_extend_i8x8(y.qs.as_ptr());
            let sum_xy = i32x4_dot_i16x8(x1, y1);

            let x2 = i16x8_extend_high_i8x16(x12);
            let y2 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(8));
            let sum_xy = i32x4_add(sum_xy, i32x4_dot_i16x8(x2, y2));

            let x3 = i16x8_extend_low_i8x16(x34);
            let y3 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(16));
            let sum_xy = i32x4_add(sum_xy, i32x4_dot_i16x8(x3, y3));

            let x4 = i16x8_extend_high_i8x16(x34);
            let y4 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(24));
            let sum_xy = i32x4_add(sum_xy, i32x4_dot_i16x8(x4, y4));

            let sum_xy = f32x4_convert_i32x4(sum_xy);

            // f32x4_relaxed_madd is nightly only.
            let d = f32x4_splat(f16::to_f32(x.d) * f16::to_f32(y.d));
            let scaled = f32x4_mul(sum_xy, d);
            acc = f32x4_add(acc, scaled)
        }
        let res = f32x4_extract_lane::<0>(acc)
            + f32x4_extract_lane::<1>(acc)
            + f32x4_extract_lane::<2>(acc)
            + f32x4_extract_lane::<3>(acc);
        res
    }
}

/// runegrid: `BlockQ4_1::vec_dot_unopt` with the integer part of each block in simd128. The
/// integer sums are exact whatever their order, and the float steps are the scalar code's, in
/// its order, so the result is bit for bit the scalar one.
#[inline(always)]
pub(crate) fn vec_dot_q4_1_q8_1(n: usize, xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_1),
        "vec_dot_q4_1_q8_1: {n} is not divisible by {QK8_1}"
    );
    let mut sumf = 0f32;
    for (x, y) in xs.iter().zip(ys.iter()) {
        // SAFETY: `qs` are 16 and 32 bytes; the loads read exactly those (unaligned loads are
        // allowed in WebAssembly).
        let sumi = unsafe {
            let q = v128_load(x.qs.as_ptr() as *const v128);
            // Weights 0..=15: the low nibbles pair with y[0..16], the high ones with y[16..32].
            let lo = v128_and(q, u8x16_splat(0x0F));
            let hi = u8x16_shr(q, 4);
            let y0 = i16x8_load_extend_i8x8(y.qs.as_ptr());
            let y1 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(8));
            let y2 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(16));
            let y3 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(24));
            let s = i32x4_dot_i16x8(u16x8_extend_low_u8x16(lo), y0);
            let s = i32x4_add(s, i32x4_dot_i16x8(u16x8_extend_high_u8x16(lo), y1));
            let s = i32x4_add(s, i32x4_dot_i16x8(u16x8_extend_low_u8x16(hi), y2));
            let s = i32x4_add(s, i32x4_dot_i16x8(u16x8_extend_high_u8x16(hi), y3));
            let s = i32x4_add(s, i32x4_shuffle::<2, 3, 0, 1>(s, s));
            let s = i32x4_add(s, i32x4_shuffle::<1, 0, 3, 2>(s, s));
            i32x4_extract_lane::<0>(s)
        };
        sumf += sumi as f32 * f16::to_f32(x.d) * f16::to_f32(y.d)
            + f16::to_f32(x.m) * f16::to_f32(y.s)
    }
    sumf
}

/// The four partial integer dot products of one Q4_1 block, its weights unpacked
/// ([`unpack_q4_1`]), with one Q8_1 block: their sum is the block's.
#[inline(always)]
unsafe fn dot_parts_q4_1(x: &[v128; 4], y: &BlockQ8_1) -> v128 {
    let y0 = i16x8_load_extend_i8x8(y.qs.as_ptr());
    let y1 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(8));
    let y2 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(16));
    let y3 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(24));
    let s = i32x4_dot_i16x8(x[0], y0);
    let s = i32x4_add(s, i32x4_dot_i16x8(x[1], y1));
    let s = i32x4_add(s, i32x4_dot_i16x8(x[2], y2));
    i32x4_add(s, i32x4_dot_i16x8(x[3], y3))
}

/// The lane sums of four `i32x4`, as one: `[Σa, Σb, Σc, Σd]` (exact).
#[inline(always)]
fn sum_lanes4(a: v128, b: v128, c: v128, d: v128) -> v128 {
    let ab = i32x4_add(
        i32x4_shuffle::<0, 4, 1, 5>(a, b),
        i32x4_shuffle::<2, 6, 3, 7>(a, b),
    );
    let cd = i32x4_add(
        i32x4_shuffle::<0, 4, 1, 5>(c, d),
        i32x4_shuffle::<2, 6, 3, 7>(c, d),
    );
    i32x4_add(
        i32x4_shuffle::<0, 1, 4, 5>(ab, cd),
        i32x4_shuffle::<2, 3, 6, 7>(ab, cd),
    )
}

/// A Q4_1 block's 32 weights (0..=15) as four `i16x8`, in the order of the Q8_1 values they
/// multiply.
#[inline(always)]
unsafe fn unpack_q4_1(x: &BlockQ4_1) -> [v128; 4] {
    let q = v128_load(x.qs.as_ptr() as *const v128);
    let lo = v128_and(q, u8x16_splat(0x0F));
    let hi = u8x16_shr(q, 4);
    [
        u16x8_extend_low_u8x16(lo),
        u16x8_extend_high_u8x16(lo),
        u16x8_extend_low_u8x16(hi),
        u16x8_extend_high_u8x16(hi),
    ]
}

/// One weight row against one activation row: over the blocks `i` in order, `sumf +=
/// sumi as f32 * xd[i] * yd[i] + xm[i] * ys[i]` — the scalar code's steps, each block's term
/// computed four lanes at a time (the same IEEE operations lane by lane) and added in order.
#[inline(always)]
fn row_q4_1(
    x: impl Fn(usize) -> [v128; 4],
    y: &[BlockQ8_1],
    (xd, xm): (&[f32], &[f32]),
    (yd, ys): (&[f32], &[f32]),
) -> f32 {
    let kb = y.len();
    let mut sumf = 0f32;
    let mut i = 0;
    // SAFETY (the unsafe blocks below): the loads read within the blocks and the f32 slices,
    // which hold `kb` items each (unaligned loads are allowed in WebAssembly).
    while i + 4 <= kb {
        let t = unsafe {
            let sumi = sum_lanes4(
                dot_parts_q4_1(&x(i), &y[i]),
                dot_parts_q4_1(&x(i + 1), &y[i + 1]),
                dot_parts_q4_1(&x(i + 2), &y[i + 2]),
                dot_parts_q4_1(&x(i + 3), &y[i + 3]),
            );
            let load = |v: &[f32]| v128_load(v.as_ptr().add(i) as *const v128);
            f32x4_add(
                f32x4_mul(f32x4_mul(f32x4_convert_i32x4(sumi), load(xd)), load(yd)),
                f32x4_mul(load(xm), load(ys)),
            )
        };
        sumf += f32x4_extract_lane::<0>(t);
        sumf += f32x4_extract_lane::<1>(t);
        sumf += f32x4_extract_lane::<2>(t);
        sumf += f32x4_extract_lane::<3>(t);
        i += 4;
    }
    while i < kb {
        let s = unsafe { dot_parts_q4_1(&x(i), &y[i]) };
        let s = i32x4_add(s, i32x4_shuffle::<2, 3, 0, 1>(s, s));
        let s = i32x4_add(s, i32x4_shuffle::<1, 0, 3, 2>(s, s));
        let sumi = i32x4_extract_lane::<0>(s);
        sumf += sumi as f32 * xd[i] * yd[i] + xm[i] * ys[i];
        i += 1;
    }
    sumf
}

/// Four activation rows against one weight row (its blocks unpacked in `x`), the float terms
/// four rows at a time: lane `j` of the result is row `j`'s `sumf`. For each block `i` in order,
/// the four rows' integer sums are gathered in one vector and each lane takes the scalar
/// code's steps, `sumf += sumi as f32 * xd[i] * yd[i] + xm[i] * ys[i]` (the same IEEE
/// operations, in the same order, per lane), so every lane is bit for bit the one-row result.
/// `y` holds the four rows' blocks one after the other (`kb` each); `yd4` and `ys4` their
/// scales as f32, four per block (`yd4[4 * i + j]`: row `j`, block `i`).
#[inline(always)]
fn rows4_q4_1(
    x: &[[v128; 4]],
    (xd, xm): (&[f32], &[f32]),
    y: &[BlockQ8_1],
    (yd4, ys4): (&[f32], &[f32]),
) -> v128 {
    let kb = x.len();
    assert!(y.len() == 4 * kb && xd.len() == kb && xm.len() == kb);
    assert!(yd4.len() == 4 * kb && ys4.len() == 4 * kb);
    let mut acc = f32x4_splat(0.0);
    // SAFETY: every index below is under `kb` (blocks, scales) or `4 * kb` (the rows' blocks,
    // the four-row scales), as asserted above; unaligned loads are allowed in WebAssembly.
    unsafe {
        let (x, y) = (x.as_ptr(), y.as_ptr());
        let (yd4, ys4) = (yd4.as_ptr(), ys4.as_ptr());
        for i in 0..kb {
            let xi = &*x.add(i);
            let sumi = sum_lanes4(
                dot_parts_q4_1(xi, &*y.add(i)),
                dot_parts_q4_1(xi, &*y.add(kb + i)),
                dot_parts_q4_1(xi, &*y.add(2 * kb + i)),
                dot_parts_q4_1(xi, &*y.add(3 * kb + i)),
            );
            let t = f32x4_add(
                f32x4_mul(
                    f32x4_mul(f32x4_convert_i32x4(sumi), f32x4_splat(*xd.get_unchecked(i))),
                    v128_load(yd4.add(4 * i) as *const v128),
                ),
                f32x4_mul(
                    f32x4_splat(*xm.get_unchecked(i)),
                    v128_load(ys4.add(4 * i) as *const v128),
                ),
            );
            acc = f32x4_add(acc, t);
        }
    }
    acc
}

/// runegrid: `BlockQ8_1::from_float` (quantize_row_q8_1), bit for bit, its per-value steps in
/// simd128. Per block: `amax`, the largest `|x|` (`f32x4.pmax` with the running maximum first
/// ignores NaNs as `f32::max` does, and the maximum of non-NaN values is the same in any
/// order); `d`, `id`, and the two halves computed as the scalar code does; each value
/// `round(x * id) as i8`, with `round` (half away from zero) as `trunc`, plus one away from zero
/// when the dropped fraction (exact) is at least 0.5, and `as i8` (saturating, NaN to 0) as a
/// saturating conversion and two saturating narrowings; their sum in integers.
pub(crate) fn quantize_row_q8_1(xs: &[f32], ys: &mut [BlockQ8_1]) {
    assert!(xs.len() == ys.len() * QK8_1);
    for (x, y) in xs.chunks_exact(QK8_1).zip(ys.iter_mut()) {
        // SAFETY: the loads read the block's 32 values (unaligned loads are allowed in
        // WebAssembly); the store writes the block's 32 quants.
        unsafe {
            let v: [v128; 8] =
                std::array::from_fn(|i| v128_load(x.as_ptr().add(4 * i) as *const v128));
            let mut m = f32x4_splat(0.0);
            for v in v {
                m = f32x4_pmax(m, f32x4_abs(v));
            }
            let mut amax = 0f32;
            for l in [
                f32x4_extract_lane::<0>(m),
                f32x4_extract_lane::<1>(m),
                f32x4_extract_lane::<2>(m),
                f32x4_extract_lane::<3>(m),
            ] {
                amax = amax.max(l);
            }
            let d = amax / ((1 << 7) - 1) as f32;
            let id = if d != 0f32 { 1. / d } else { 0. };
            y.d = f16::from_f32(d);
            let idv = f32x4_splat(id);
            let half = f32x4_splat(0.5);
            let q: [v128; 8] = std::array::from_fn(|i| {
                let v = f32x4_mul(v[i], idv);
                let t = f32x4_trunc(v);
                let away = v128_and(
                    f32x4_ge(f32x4_abs(f32x4_sub(v, t)), half),
                    v128_or(v128_and(v, u32x4_splat(0x8000_0000)), f32x4_splat(1.0)),
                );
                i32x4_trunc_sat_f32x4(f32x4_add(t, away))
            });
            let q16 = [
                i16x8_narrow_i32x4(q[0], q[1]),
                i16x8_narrow_i32x4(q[2], q[3]),
                i16x8_narrow_i32x4(q[4], q[5]),
                i16x8_narrow_i32x4(q[6], q[7]),
            ];
            let lo = i8x16_narrow_i16x8(q16[0], q16[1]);
            let hi = i8x16_narrow_i16x8(q16[2], q16[3]);
            v128_store(y.qs.as_mut_ptr() as *mut v128, lo);
            v128_store(y.qs.as_mut_ptr().add(16) as *mut v128, hi);
            let s = i32x4_add(
                i32x4_extadd_pairwise_i16x8(i16x8_extadd_pairwise_i8x16(lo)),
                i32x4_extadd_pairwise_i16x8(i16x8_extadd_pairwise_i8x16(hi)),
            );
            let s = i32x4_add(s, i32x4_shuffle::<2, 3, 0, 1>(s, s));
            let s = i32x4_add(s, i32x4_shuffle::<1, 0, 3, 2>(s, s));
            let sum = i32x4_extract_lane::<0>(s);
            y.s = f16::from_f32(sum as f32) * y.d;
        }
    }
}

/// Four halves (the low 16 bits of each lane) as f32, each exactly as the patched `half`'s
/// `f16_to_f32_wasm` converts one: the exponent and mantissa shifted into an f32's place and
/// multiplied by 2^112 (normal and subnormal halves), infinities and NaNs (exponent all ones)
/// built directly, NaNs with the quiet bit set; the sign put back.
#[inline(always)]
fn f16x4_to_f32x4(h: v128) -> v128 {
    let sign = i32x4_shl(v128_and(h, i32x4_splat(0x8000)), 16);
    let em = v128_and(h, i32x4_splat(0x7fff));
    let finite = f32x4_mul(i32x4_shl(em, 13), f32x4_splat(f32::from_bits(0x7780_0000)));
    let special = v128_bitselect(
        i32x4_splat(0x7f80_0000),
        v128_or(
            i32x4_splat(0x7fc0_0000),
            i32x4_shl(v128_and(em, i32x4_splat(0x03ff)), 13),
        ),
        i32x4_eq(em, i32x4_splat(0x7c00)),
    );
    v128_or(
        sign,
        v128_bitselect(special, finite, i32x4_ge(em, i32x4_splat(0x7c00))),
    )
}

/// One activation row against four weight rows, the float terms four weight rows at a time:
/// lane `j` of the result is weight row `j`'s `sumf`, bit for bit the one-row result (for each
/// block `i` in order, `sumf += sumi as f32 * xd * yd + xm * ys` lane by lane, the same IEEE
/// operations in the same order). The activation block's values are loaded once for the four
/// rows, and the rows' f16 scales converted four at a time ([`f16x4_to_f32x4`]).
#[inline(always)]
fn cols4_q4_1(x: [&[BlockQ4_1]; 4], y: &[BlockQ8_1], (yd, ys): (&[f32], &[f32])) -> v128 {
    let kb = y.len();
    assert!(x.iter().all(|x| x.len() == kb) && yd.len() == kb && ys.len() == kb);
    let mut acc = f32x4_splat(0.0);
    // SAFETY: every index below is under `kb`, as asserted above; the loads read within one
    // block (unaligned loads are allowed in WebAssembly).
    unsafe {
        let [x0, x1, x2, x3] = x.map(|x| x.as_ptr());
        for i in 0..kb {
            let yi = &*y.as_ptr().add(i);
            let y0 = i16x8_load_extend_i8x8(yi.qs.as_ptr());
            let y1 = i16x8_load_extend_i8x8(yi.qs.as_ptr().add(8));
            let y2 = i16x8_load_extend_i8x8(yi.qs.as_ptr().add(16));
            let y3 = i16x8_load_extend_i8x8(yi.qs.as_ptr().add(24));
            let dot = |x: &BlockQ4_1| {
                let x = unpack_q4_1(x);
                let s = i32x4_dot_i16x8(x[0], y0);
                let s = i32x4_add(s, i32x4_dot_i16x8(x[1], y1));
                let s = i32x4_add(s, i32x4_dot_i16x8(x[2], y2));
                i32x4_add(s, i32x4_dot_i16x8(x[3], y3))
            };
            let (b0, b1, b2, b3) = (&*x0.add(i), &*x1.add(i), &*x2.add(i), &*x3.add(i));
            let sumi = sum_lanes4(dot(b0), dot(b1), dot(b2), dot(b3));
            // Each block starts with its scale `d` and minimum `m`, two halves: one u32.
            let dm = |b: &BlockQ4_1| (b as *const BlockQ4_1 as *const u32).read_unaligned();
            let dm = u32x4(dm(b0), dm(b1), dm(b2), dm(b3));
            let xd = f16x4_to_f32x4(v128_and(dm, u32x4_splat(0xffff)));
            let xm = f16x4_to_f32x4(u32x4_shr(dm, 16));
            let t = f32x4_add(
                f32x4_mul(
                    f32x4_mul(f32x4_convert_i32x4(sumi), xd),
                    f32x4_splat(*yd.get_unchecked(i)),
                ),
                f32x4_mul(xm, f32x4_splat(*ys.get_unchecked(i))),
            );
            acc = f32x4_add(acc, t);
        }
    }
    acc
}

/// runegrid: `k_quants::matmul` for Q4_1 weights, bit for bit (the same Q8_1 activations, the
/// same integer sums, the same float steps in the same order), with fewer instructions: the
/// activations' scales are converted from f16 once per call instead of once per weight row,
/// and with one activation row (a decode step) four blocks' terms are computed at a time. With
/// several rows (a prompt), each weight row is unpacked once for all of them and the rows are
/// taken four at a time ([`rows4_q4_1`]), their terms in one vector: a batched prefill.
pub(crate) fn matmul_q4_1(
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    rhs: &[BlockQ4_1],
    dst: &mut [f32],
) {
    use super::k_quants::GgmlType;
    let kb = k / QK8_1;
    let mut ys = vec![BlockQ8_1::zeros(); m * kb];
    for r in 0..m {
        BlockQ8_1::from_float(&lhs[r * k..(r + 1) * k], &mut ys[r * kb..(r + 1) * kb]);
    }
    let yd: Vec<f32> = ys.iter().map(|b| f16::to_f32(b.d)).collect();
    let ysum: Vec<f32> = ys.iter().map(|b| f16::to_f32(b.s)).collect();
    // The scales of each group of four rows, four per block (row-minor).
    let groups = m / 4;
    let mut yd4 = vec![0f32; groups * 4 * kb];
    let mut ys4 = vec![0f32; groups * 4 * kb];
    for g in 0..groups {
        for j in 0..4 {
            for i in 0..kb {
                yd4[g * 4 * kb + 4 * i + j] = yd[(4 * g + j) * kb + i];
                ys4[g * 4 * kb + 4 * i + j] = ysum[(4 * g + j) * kb + i];
            }
        }
    }
    let mut xd = vec![0f32; kb];
    let mut xm = vec![0f32; kb];
    // A weight row's scales and minimums as f32.
    let scales = |xs: &[BlockQ4_1], xd: &mut [f32], xm: &mut [f32]| {
        for (i, x) in xs.iter().enumerate() {
            xd[i] = f16::to_f32(x.d);
            xm[i] = f16::to_f32(x.m);
        }
    };
    if m == 1 {
        let n4 = n / 4 * 4;
        for col in (0..n4).step_by(4) {
            let w = |j: usize| &rhs[(col + j) * kb..(col + j + 1) * kb];
            let sums = cols4_q4_1([w(0), w(1), w(2), w(3)], &ys, (&yd, &ysum));
            dst[col] = f32x4_extract_lane::<0>(sums);
            dst[col + 1] = f32x4_extract_lane::<1>(sums);
            dst[col + 2] = f32x4_extract_lane::<2>(sums);
            dst[col + 3] = f32x4_extract_lane::<3>(sums);
        }
        for col in n4..n {
            let xs = &rhs[col * kb..(col + 1) * kb];
            scales(xs, &mut xd, &mut xm);
            // SAFETY: reads exactly the block's bytes.
            let x = |i: usize| unsafe { unpack_q4_1(&xs[i]) };
            dst[col] = row_q4_1(x, &ys, (&xd, &xm), (&yd, &ysum));
        }
        return;
    }
    let mut unpacked = vec![[f32x4_splat(0.0); 4]; kb];
    for col in 0..n {
        let xs = &rhs[col * kb..(col + 1) * kb];
        scales(xs, &mut xd, &mut xm);
        for (i, x) in xs.iter().enumerate() {
            // SAFETY: as above.
            unpacked[i] = unsafe { unpack_q4_1(x) };
        }
        for g in 0..groups {
            let blocks = g * 4 * kb..(g + 1) * 4 * kb;
            let sums = rows4_q4_1(
                &unpacked,
                (&xd, &xm),
                &ys[blocks.clone()],
                (&yd4[blocks.clone()], &ys4[blocks]),
            );
            dst[(4 * g) * n + col] = f32x4_extract_lane::<0>(sums);
            dst[(4 * g + 1) * n + col] = f32x4_extract_lane::<1>(sums);
            dst[(4 * g + 2) * n + col] = f32x4_extract_lane::<2>(sums);
            dst[(4 * g + 3) * n + col] = f32x4_extract_lane::<3>(sums);
        }
        for r in 4 * groups..m {
            let rows = r * kb..(r + 1) * kb;
            dst[r * n + col] = row_q4_1(
                |i| unpacked[i],
                &ys[rows.clone()],
                (&xd, &xm),
                (&yd[rows.clone()], &ysum[rows]),
            );
        }
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q8_0_q8_0(n: usize, xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q8_0_q8_0: {n} is not divisible by {QK8_0}"
    );
    unsafe {
        let mut acc = f32x4_splat(0.0f32);
        for (x, y) in xs.iter().zip(ys.iter()) {
            let x1 = i16x8_load_extend_i8x8(x.qs.as_ptr());
            let y1 = i16x8_load_extend_i8x8(y.qs.as_ptr());
            let sum_xy = i32x4_dot_i16x8(x1, y1);

            let x2 = i16x8_load_extend_i8x8(x.qs.as_ptr().add(8));
            let y2 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(8));
            let sum_xy = i32x4_add(sum_xy, i32x4_dot_i16x8(x2, y2));

            let x3 = i16x8_load_extend_i8x8(x.qs.as_ptr().add(16));
            let y3 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(16));
            let sum_xy = i32x4_add(sum_xy, i32x4_dot_i16x8(x3, y3));

            let x4 = i16x8_load_extend_i8x8(x.qs.as_ptr().add(24));
            let y4 = i16x8_load_extend_i8x8(y.qs.as_ptr().add(24));
            let sum_xy = i32x4_add(sum_xy, i32x4_dot_i16x8(x4, y4));

            let sum_xy = f32x4_convert_i32x4(sum_xy);

            // f32x4_relaxed_madd is nightly only.
            let d = f32x4_splat(f16::to_f32(x.d) * f16::to_f32(y.d));
            let scaled = f32x4_mul(sum_xy, d);
            acc = f32x4_add(acc, scaled)
        }
        let res = f32x4_extract_lane::<0>(acc)
            + f32x4_extract_lane::<1>(acc)
            + f32x4_extract_lane::<2>(acc)
            + f32x4_extract_lane::<3>(acc);
        res
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q2k_q8k(n: usize, xs: &[BlockQ2K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q2k_q8k: {n} is not divisible by {QK_K}"
    );
    unsafe {
        let mut sumf = f32x4_splat(0f32);
        for (x, y) in xs.iter().zip(ys.iter()) {
            let mut q2: &[_] = &x.qs;
            let mut q8: &[_] = &y.qs;
            let sc = &x.scales;

            let mut summs = i32x4_splat(0);
            for i in (0..(QK_K / 16)).step_by(4) {
                let bsums = i32x4_load_extend_i16x4(y.bsums.as_ptr().add(i));
                let scales = i32x4_shr(
                    i32x4(
                        sc[i] as i32,
                        sc[i + 1] as i32,
                        sc[i + 2] as i32,
                        sc[i + 3] as i32,
                    ),
                    4,
                );
                summs = i32x4_add(summs, i32x4_mul(bsums, scales))
            }
            let summs = f32x4_convert_i32x4(summs);

            let dall = y.d * x.d.to_f32();
            let dmin = y.d * x.dmin.to_f32();

            let mut isum = i32x4_splat(0);
            let mut is = 0;
            for _ in 0..(QK_K / 128) {
                let mut shift = 0;
                for _ in 0..4 {
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = i16x8_splat(0);
                    for l in (0..16).step_by(8) {
                        let q8 = i16x8_load_extend_i8x8(q8.as_ptr().add(l));
                        let q2 = i16x8_load_extend_u8x8(q2.as_ptr().add(l));
                        let q2 = v128_and(i16x8_shr(q2, shift), i16x8_splat(3));
                        isuml = i16x8_add(isuml, i16x8_mul(q2, q8))
                    }
                    let dd = i32x4_splat(d);
                    isum = i32x4_add(isum, i32x4_mul(i32x4_extend_low_i16x8(isuml), dd));
                    isum = i32x4_add(isum, i32x4_mul(i32x4_extend_high_i16x8(isuml), dd));
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut isuml = i16x8_splat(0);
                    for l in (16..32).step_by(8) {
                        let q8 = i16x8_load_extend_i8x8(q8.as_ptr().add(l));
                        let q2 = i16x8_load_extend_u8x8(q2.as_ptr().add(l));
                        let q2 = v128_and(i16x8_shr(q2, shift), i16x8_splat(3));
                        isuml = i16x8_add(isuml, i16x8_mul(q2, q8))
                    }
                    let dd = i32x4_splat(d);
                    isum = i32x4_add(isum, i32x4_mul(i32x4_extend_low_i16x8(isuml), dd));
                    isum = i32x4_add(isum, i32x4_mul(i32x4_extend_high_i16x8(isuml), dd));
                    shift += 2;
                    // adjust the indexing
                    q8 = &q8[32..];
                }
                // adjust the indexing
                q2 = &q2[32..];
            }
            let isum = f32x4_convert_i32x4(isum);
            sumf = f32x4_add(
                sumf,
                f32x4_sub(
                    f32x4_mul(isum, f32x4_splat(dall)),
                    f32x4_mul(summs, f32x4_splat(dmin)),
                ),
            );
        }
        let sumf = f32x4_extract_lane::<0>(sumf)
            + f32x4_extract_lane::<1>(sumf)
            + f32x4_extract_lane::<2>(sumf)
            + f32x4_extract_lane::<3>(sumf);
        sumf
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q4k_q8k(n: usize, xs: &[BlockQ4K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q4k_q8k: {n} is not divisible by {QK_K}"
    );
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;

    let mut utmp: [u32; 4] = [0; 4];
    let mut scales: [u8; 8] = [0; 8];
    let mut mins: [u8; 8] = [0; 8];

    let mut aux8: [u8; QK_K] = [0; QK_K];
    let mut sums = f32x4_splat(0f32);
    unsafe {
        for (y, x) in ys.iter().zip(xs.iter()) {
            let q4 = &x.qs;
            let q8 = &y.qs;

            for j in 0..QK_K / 64 {
                let q4_1 = v128_load(q4.as_ptr().add(32 * j) as *const v128);
                let q4_2 = v128_load(q4.as_ptr().add(32 * j + 16) as *const v128);
                v128_store(
                    aux8.as_mut_ptr().add(64 * j) as *mut v128,
                    v128_and(q4_1, u8x16_splat(0x0F)),
                );
                v128_store(
                    aux8.as_mut_ptr().add(64 * j + 16) as *mut v128,
                    v128_and(q4_2, u8x16_splat(0x0F)),
                );
                v128_store(
                    aux8.as_mut_ptr().add(64 * j + 32) as *mut v128,
                    u8x16_shr(q4_1, 4),
                );
                v128_store(
                    aux8.as_mut_ptr().add(64 * j + 48) as *mut v128,
                    u8x16_shr(q4_2, 4),
                );
            }

            LittleEndian::read_u32_into(&x.scales, &mut utmp[0..3]);

            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;

            //extract scales and mins
            LittleEndian::write_u32_into(&utmp[0..2], &mut scales);
            LittleEndian::write_u32_into(&utmp[2..4], &mut mins);

            let mut sumi = i32x4_splat(0);
            for j in (0..QK_K / 16).step_by(4) {
                let bsums = i32x4_load_extend_i16x4(y.bsums.as_ptr().add(j));
                let (m1, m2) = (mins[j / 2] as i32, mins[j / 2 + 1] as i32);
                let mins = i32x4(m1, m1, m2, m2);
                sumi = i32x4_add(sumi, i32x4_mul(bsums, mins));
            }

            let mut aux32 = i32x4_splat(0i32);
            for (scale_i, scale) in scales.iter().enumerate() {
                let scale = i32x4_splat(*scale as i32);
                for j in 0..4 {
                    let i = 32 * scale_i + 8 * j;
                    let q8 = i16x8_load_extend_i8x8(q8.as_ptr().add(i));
                    let aux8 = i16x8_load_extend_u8x8(aux8.as_ptr().add(i));
                    let aux16 = i16x8_mul(q8, aux8);
                    aux32 = i32x4_add(aux32, i32x4_mul(scale, i32x4_extend_low_i16x8(aux16)));
                    aux32 = i32x4_add(aux32, i32x4_mul(scale, i32x4_extend_high_i16x8(aux16)));
                }
            }
            let aux32 = f32x4_convert_i32x4(aux32);
            let d = f32x4_splat(x.d.to_f32() * y.d);
            sums = f32x4_add(sums, f32x4_mul(aux32, d));
            let dmin = x.dmin.to_f32() * y.d;
            let dmin = f32x4_splat(dmin);
            let sumi = f32x4_convert_i32x4(sumi);
            sums = f32x4_sub(sums, f32x4_mul(sumi, dmin));
        }
        let sums = f32x4_extract_lane::<0>(sums)
            + f32x4_extract_lane::<1>(sums)
            + f32x4_extract_lane::<2>(sums)
            + f32x4_extract_lane::<3>(sums);
        sums
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q6k_q8k(n: usize, xs: &[BlockQ6K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q6k_q8k: {n} is not divisible by {QK_K}"
    );
    let mut aux8 = [0i8; QK_K];
    unsafe {
        let mut sums = f32x4_splat(0f32);

        for (x, y) in xs.iter().zip(ys.iter()) {
            let q4 = &x.ql;
            let qh = &x.qh;
            let q8 = &y.qs;
            let mut aux32 = f32x4_splat(0f32);

            for j in (0..QK_K).step_by(128) {
                let aux8 = aux8.as_mut_ptr().add(j);
                let q4 = &q4.as_ptr().add(j / 2);
                let qh = &qh.as_ptr().add(j / 4);
                for l in (0..32).step_by(16) {
                    // aux8[l] = (((q4[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32) as i8;
                    let a8 = v128_or(
                        v128_and(v128_load(q4.add(l) as *const v128), u8x16_splat(0xF)),
                        u8x16_shl(
                            v128_and(v128_load(qh.add(l) as *const v128), u8x16_splat(3)),
                            4,
                        ),
                    );
                    let a8_low = i16x8_sub(i16x8_extend_low_u8x16(a8), i16x8_splat(32));
                    let a8_high = i16x8_sub(i16x8_extend_high_u8x16(a8), i16x8_splat(32));
                    v128_store(
                        aux8.add(l) as *mut v128,
                        i8x16_narrow_i16x8(a8_low, a8_high),
                    );

                    // aux8[l + 32] =
                    //    (((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32) as i8;
                    let a8 = v128_or(
                        v128_and(v128_load(q4.add(l + 32) as *const v128), u8x16_splat(0xF)),
                        u8x16_shl(
                            v128_and(
                                u8x16_shr(v128_load(qh.add(l) as *const v128), 2),
                                u8x16_splat(3),
                            ),
                            4,
                        ),
                    );
                    let a8_low = i16x8_sub(i16x8_extend_low_u8x16(a8), i16x8_splat(32));
                    let a8_high = i16x8_sub(i16x8_extend_high_u8x16(a8), i16x8_splat(32));
                    v128_store(
                        aux8.add(l + 32) as *mut v128,
                        i8x16_narrow_i16x8(a8_low, a8_high),
                    );

                    // aux8[l + 64] = (((q4[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32) as i8;
                    let a8 = v128_or(
                        u8x16_shr(v128_load(q4.add(l) as *const v128), 4),
                        u8x16_shl(
                            v128_and(
                                u8x16_shr(v128_load(qh.add(l) as *const v128), 4),
                                u8x16_splat(3),
                            ),
                            4,
                        ),
                    );
                    let a8_low = i16x8_sub(i16x8_extend_low_u8x16(a8), i16x8_splat(32));
                    let a8_high = i16x8_sub(i16x8_extend_high_u8x16(a8), i16x8_splat(32));
                    v128_store(
                        aux8.add(l + 64) as *mut v128,
                        i8x16_narrow_i16x8(a8_low, a8_high),
                    );

                    // aux8[l + 96] =
                    //    (((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32) as i8;
                    let a8 = v128_or(
                        u8x16_shr(v128_load(q4.add(l + 32) as *const v128), 4),
                        u8x16_shl(
                            v128_and(
                                u8x16_shr(v128_load(qh.add(l) as *const v128), 6),
                                u8x16_splat(3),
                            ),
                            4,
                        ),
                    );
                    let a8_low = i16x8_sub(i16x8_extend_low_u8x16(a8), i16x8_splat(32));
                    let a8_high = i16x8_sub(i16x8_extend_high_u8x16(a8), i16x8_splat(32));
                    v128_store(
                        aux8.add(l + 96) as *mut v128,
                        i8x16_narrow_i16x8(a8_low, a8_high),
                    );
                }
            }

            for (j, &scale) in x.scales.iter().enumerate() {
                let scale = f32x4_splat(scale as f32);
                for offset in [0, 8] {
                    let aux16 = i16x8_mul(
                        i16x8_load_extend_i8x8(q8.as_ptr().add(16 * j + offset)),
                        i16x8_load_extend_i8x8(aux8.as_ptr().add(16 * j + offset)),
                    );
                    aux32 = f32x4_add(
                        aux32,
                        f32x4_mul(f32x4_convert_i32x4(i32x4_extend_low_i16x8(aux16)), scale),
                    );
                    aux32 = f32x4_add(
                        aux32,
                        f32x4_mul(f32x4_convert_i32x4(i32x4_extend_high_i16x8(aux16)), scale),
                    );
                }
            }

            let d = f32x4_splat(x.d.to_f32() * y.d);
            sums = f32x4_add(sums, f32x4_mul(aux32, d));
        }
        let sums = f32x4_extract_lane::<0>(sums)
            + f32x4_extract_lane::<1>(sums)
            + f32x4_extract_lane::<2>(sums)
            + f32x4_extract_lane::<3>(sums);
        sums
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q8k_q8k(n: usize, xs: &[BlockQ8K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q8k_q8k: {n} is not divisible by {QK_K}"
    );
    unsafe {
        let mut acc = f32x4_splat(0.0f32);
        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let x_qs = xs.qs.as_ptr();
            let y_qs = ys.qs.as_ptr();
            let mut sumi = i32x4_splat(0);
            for j in (0..QK_K).step_by(8) {
                let xs = i16x8_load_extend_i8x8(x_qs.add(j));
                let ys = i16x8_load_extend_i8x8(y_qs.add(j));
                let sum_xy = i32x4_dot_i16x8(xs, ys);
                sumi = i32x4_add(sumi, sum_xy)
            }
            let d = f32x4_splat(xs.d * ys.d);
            acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(sumi), d))
        }
        let res = f32x4_extract_lane::<0>(acc)
            + f32x4_extract_lane::<1>(acc)
            + f32x4_extract_lane::<2>(acc)
            + f32x4_extract_lane::<3>(acc);
        res
    }
}
