//! TEMPORARY stand-in until compare lands (same API).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub cosine: f64,
    pub baseline_norm: f64,
    pub canary_norm: f64,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Baseline,
    Canary,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error("empty")]
    Empty,
    #[error("dims {baseline} vs {canary}")]
    DimensionMismatch { baseline: usize, canary: usize },
    #[error("non-finite")]
    NonFinite(Side),
    #[error("zero vector")]
    ZeroVector(Side),
}
pub fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
}
pub fn compare(b: &[f32], c: &[f32]) -> Result<Comparison, CompareError> {
    if b.len() != c.len() {
        return Err(CompareError::DimensionMismatch {
            baseline: b.len(),
            canary: c.len(),
        });
    }
    if b.is_empty() {
        return Err(CompareError::Empty);
    }
    let (nb, nc) = (norm(b), norm(c));
    if nb == 0.0 {
        return Err(CompareError::ZeroVector(Side::Baseline));
    }
    if nc == 0.0 {
        return Err(CompareError::ZeroVector(Side::Canary));
    }
    let d: f64 = b
        .iter()
        .zip(c)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    Ok(Comparison {
        cosine: (d / nb / nc).clamp(-1.0, 1.0),
        baseline_norm: nb,
        canary_norm: nc,
    })
}
pub fn predictions_agree(a: &str, b: &str) -> bool {
    a == b
}
