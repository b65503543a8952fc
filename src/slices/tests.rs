use super::*;

fn slicer(cfg: SlicesConfig) -> Slicer {
    cfg.slicer().unwrap()
}

fn problems(cfg: SlicesConfig) -> Vec<(String, String)> {
    cfg.slicer()
        .unwrap_err()
        .into_iter()
        .map(|p| (p.key, p.message))
        .collect()
}

#[test]
fn default_slices_are_length_and_sixteen_regions() {
    let s = slicer(SlicesConfig::default());
    let mut want: Vec<String> = ["len:0-64", "len:64-256", "len:256-1024", "len:1024+"]
        .map(String::from)
        .to_vec();
    want.extend((0..16).map(|i| format!("region:{i}")));
    assert_eq!(s.names(), want);
    assert!(!s.wants_field());
    let e = vec![0.5f32; 384];
    for (n, slice) in [
        (0, 0),
        (63, 0),
        (64, 1),
        (255, 1),
        (256, 2),
        (1023, 2),
        (1024, 3),
        (9999, 3),
    ] {
        let set = s.assign(Some(&vec![b'x'; n]), None, &e);
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().next(), Some(slice), "{n} bytes");
    }
    // No input: no length slice; no embedding: no region.
    assert_eq!(s.assign(None, None, &e).len(), 1);
    assert!(s.assign(None, None, &[]).is_empty());
}

#[test]
fn field_values_and_buckets() {
    let mut cfg = SlicesConfig {
        length_edges: vec![],
        regions: 0,
        ..Default::default()
    };
    cfg.field.pointer = "/metadata/language".into();
    cfg.field.values = vec!["en".into(), "de".into(), "ja".into()];
    let s = slicer(cfg.clone());
    assert_eq!(
        s.names(),
        ["field:en", "field:de", "field:ja", "field:other"]
    );
    let one = |v: Option<&str>| s.assign(None, v, &[]).iter().collect::<Vec<_>>();
    assert_eq!(one(Some("de")), [1]);
    assert_eq!(one(Some("DE")), [3], "exact match");
    assert_eq!(one(Some("fr")), [3]);
    assert_eq!(one(None), [3]);

    let body = br#"{"metadata": {"language": "ja"}, "input": "x"}"#;
    let h = http::HeaderMap::new();
    assert_eq!(s.field_value(&h, body).as_deref(), Some("ja"));
    assert_eq!(
        s.field_value(&h, br#"{"metadata": {"language": 7}}"#)
            .as_deref(),
        Some("7")
    );
    assert_eq!(s.field_value(&h, br#"{"metadata": {}}"#), None);
    assert_eq!(s.field_value(&h, b"not json"), None);

    cfg.field.pointer.clear();
    cfg.field.header = "X-Tenant".into();
    cfg.field.values.clear();
    cfg.field.buckets = 4;
    let s = slicer(cfg);
    assert_eq!(s.names().len(), 5);
    assert_eq!(s.names()[4], "field:other");
    let mut h = http::HeaderMap::new();
    h.insert("x-tenant", http::HeaderValue::from_static(" acme "));
    let v = s.field_value(&h, b"").unwrap();
    assert_eq!(v, "acme");
    // FNV-1a is fixed: the same value lands in the same bucket on every pod.
    let b = s.assign(None, Some(&v), &[]).iter().next().unwrap();
    assert_eq!(b as u64, super::fnv1a(b"acme") % 4);
    assert!(b < 4);
}

#[test]
fn codebook_regions_are_nearest_centroid_by_cosine() {
    let s = slicer(SlicesConfig {
        length_edges: vec![],
        centroids: vec![
            vec![2.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 0.5],
        ],
        ..Default::default()
    });
    assert_eq!(s.names(), ["region:0", "region:1", "region:2"]);
    let region = |x: &[f32]| s.assign(None, None, x).iter().next();
    assert_eq!(region(&[10.0, 1.0, 0.0]), Some(0));
    assert_eq!(region(&[0.1, 0.2, 0.0]), Some(1));
    // Centroid norms do not matter: cosine, not dot product.
    assert_eq!(region(&[0.1, 0.0, 0.11]), Some(2));
    assert_eq!(region(&[1.0, 2.0]), None, "dimension mismatch");
    assert_eq!(region(&[f32::NAN, 0.0, 0.0]), None);
}

#[test]
fn default_regions_are_deterministic_and_use_all_regions() {
    let a = slicer(SlicesConfig::default());
    let b = slicer(SlicesConfig::default());
    let mut rng = SplitMix(1);
    let mut seen = [0u32; 16];
    for _ in 0..4000 {
        let x: Vec<f32> = (0..384).map(|_| rng.normal() as f32).collect();
        let ra = a.assign(None, None, &x);
        assert_eq!(ra, b.assign(None, None, &x));
        seen[ra.iter().next().unwrap() - 4] += 1;
    }
    assert!(
        seen.iter().all(|&n| n > 150),
        "isotropic data fills every region: {seen:?}"
    );
    // The planes are fixed by the first dimension seen; another dimension gets no region.
    assert!(a.assign(None, None, &[1.0; 768]).is_empty());
}

/// Sentence-embedding-like data: a common mean direction with squared weight `a2` (the
/// mean pairwise cosine), plus topic structure in an anisotropic residual (48 directions
/// with scales j^-1/2). Returns rows and topics.
fn cone(n: usize, dim: usize, a2: f64, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = SplitMix(seed);
    let gauss = |rng: &mut SplitMix| -> Vec<f64> { (0..dim).map(|_| rng.normal()).collect() };
    let unit = |v: &mut Vec<f64>| {
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
    };
    let mut m = gauss(&mut rng);
    unit(&mut m);
    let basis: Vec<Vec<f64>> = (0..48).map(|_| gauss(&mut rng)).collect();
    let scale: Vec<f64> = (1..=48).map(|j| (j as f64).powf(-0.5)).collect();
    let mix = |rng: &mut SplitMix, w: f64| -> Vec<f64> {
        let mut v = vec![0.0; dim];
        for (b, s) in basis.iter().zip(&scale) {
            let g = w * s * rng.normal();
            v.iter_mut().zip(b).for_each(|(a, x)| *a += g * x);
        }
        v
    };
    let topics: Vec<Vec<f64>> = (0..20).map(|_| mix(&mut rng, 1.0)).collect();
    let mut rows = Vec::with_capacity(n);
    let mut truth = Vec::with_capacity(n);
    for _ in 0..n {
        let t = rng.below(20);
        let mut e = mix(&mut rng, 0.7);
        e.iter_mut().zip(&topics[t]).for_each(|(a, b)| *a += b);
        let along: f64 = e.iter().zip(&m).map(|(a, b)| a * b).sum();
        e.iter_mut().zip(&m).for_each(|(a, b)| *a -= along * b);
        unit(&mut e);
        let len = 0.5 + rng.uniform() * 1.5;
        rows.push(
            e.iter()
                .zip(&m)
                .map(|(a, b)| (len * (a2.sqrt() * b + (1.0 - a2).sqrt() * a)) as f32)
                .collect(),
        );
        truth.push(t);
    }
    (rows, truth)
}

/// If one topic (1/20 of traffic) broke, the share of broken pairs in the region where
/// it weighs most (regions of at least 30 rows), averaged over topics: the signal a
/// region slice gives (0.05 without slices).
fn broken_topic_share(by_topic: &[[u32; 20]]) -> f64 {
    (0..20)
        .map(|t| {
            by_topic
                .iter()
                .map(|r| (r[t], r.iter().sum::<u32>()))
                .filter(|&(_, n)| n >= 30)
                .map(|(k, n)| f64::from(k) / f64::from(n))
                .fold(0.0, f64::max)
        })
        .sum::<f64>()
        / 20.0
}

/// exp(entropy) of the region shares: the effective number of regions in use.
fn effective(counts: &[u32]) -> f64 {
    let n: u32 = counts.iter().sum();
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / f64::from(n);
            -p * p.ln()
        })
        .sum();
    h.exp()
}

/// The default regions on data in a narrow cone: 8 folded hyperplanes against 4 plain
/// ones (one per bit of the region index). See `DEFAULT_HYPERPLANES` for the table.
#[test]
fn default_regions_split_a_narrow_cone() {
    let dim = 384;
    let s = slicer(SlicesConfig {
        length_edges: vec![],
        ..Default::default()
    });
    for (a2, at_least) in [
        (0.05, 10.0),
        (0.3, 10.0),
        (0.5, 8.0),
        (0.75, 4.0),
        (0.9, 2.0),
    ] {
        let (rows, topic) = cone(3000, dim, a2, 42);
        let mut folded = [0u32; 16];
        let mut plain = [0u32; 16];
        let mut by_topic = vec![[0u32; 20]; 16];
        let planes = hyperplanes(dim);
        for (x, &t) in rows.iter().zip(&topic) {
            let r = s.assign(None, None, x).iter().next().unwrap();
            folded[r] += 1;
            by_topic[r][t] += 1;
            let mut cell = 0;
            for (i, p) in planes.chunks_exact(dim).take(4).enumerate() {
                let d: f32 = p.iter().zip(x).map(|(a, b)| a * b).sum();
                cell |= usize::from(d > 0.0) << i;
            }
            plain[cell] += 1;
        }
        let mean_cos = {
            let u: Vec<Vec<f32>> = rows[..300]
                .iter()
                .map(|r| {
                    let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
                    r.iter().map(|a| a / n).collect()
                })
                .collect();
            let mut sum = 0.0;
            for i in 0..u.len() {
                for j in 0..i {
                    sum += f64::from(u[i].iter().zip(&u[j]).map(|(a, b)| a * b).sum::<f32>());
                }
            }
            sum / (u.len() * (u.len() - 1) / 2) as f64
        };
        let (ef, ep) = (effective(&folded), effective(&plain));
        let purity = broken_topic_share(&by_topic);
        // A codebook fitted on the same rows, for comparison.
        let unit: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
                r.iter().map(move |a| a / n)
            })
            .collect();
        let x = ndarray::Array2::from_shape_vec((rows.len(), dim), unit).unwrap();
        let p = codebook::KMeansParams {
            k: 16,
            seed: 1,
            max_iter: 50,
        };
        let fit = codebook::spherical_kmeans(x.view(), p);
        let mut fitted = vec![[0u32; 20]; 16];
        for (&l, &t) in fit.labels.iter().zip(&topic) {
            fitted[l as usize][t] += 1;
        }
        let fitted_purity = broken_topic_share(&fitted);
        eprintln!(
            "mean pairwise cosine {mean_cos:.2}: effective regions of 16: default (8 folded hyperplanes) {ef:.1}, 4 plain hyperplanes {ep:.1}; largest region {:.0} %; broken-topic share in its best region {purity:.2} (fitted codebook: {fitted_purity:.2})",
            100.0 * f64::from(*folded.iter().max().unwrap()) / rows.len() as f64
        );
        assert!(ef >= at_least, "a2 {a2}: {ef}");
        assert!(purity >= 0.1, "a2 {a2}: {purity}");
    }
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let p = problems(SlicesConfig {
        length_edges: vec![256, 64],
        regions: 40,
        ..Default::default()
    });
    let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["slices.length_edges", "slices.regions"], "{p:?}");
    assert!(p[0].1.contains("strictly increasing") && p[0].1.contains("e.g."));

    let p = problems(SlicesConfig {
        codebook: "/nonexistent/codebook.json".into(),
        ..Default::default()
    });
    assert_eq!(p[0].0, "slices.codebook");
    assert!(p[0].1.contains("slices fit"), "{}", p[0].1);

    let mut cfg = SlicesConfig::default();
    cfg.field.pointer = "metadata".into();
    cfg.field.header = "x-tenant".into();
    assert_eq!(problems(cfg.clone())[0].0, "slices.field.header");
    cfg.field.header.clear();
    assert_eq!(problems(cfg.clone())[0].0, "slices.field.pointer");
    cfg.field.pointer = "/metadata".into();
    assert_eq!(problems(cfg.clone())[0].0, "slices.field.values");
    cfg.field.values = vec!["a".into(), "other".into(), "a".into()];
    let keys: Vec<String> = problems(cfg.clone()).into_iter().map(|p| p.0).collect();
    assert_eq!(keys, ["slices.field.values[1]", "slices.field.values[2]"]);
    // 13 values + other + 4 length + 16 regions = 34 > 32.
    cfg.field.values = (0..13).map(|i| format!("v{i}")).collect();
    let p = problems(cfg.clone());
    assert!(p[0].1.contains("34 slices"), "{p:?}");
    cfg.field.values.truncate(11);
    assert_eq!(slicer(cfg).len(), 32);

    let mut cfg = SlicesConfig::default();
    cfg.field.values = vec!["en".into()];
    assert_eq!(problems(cfg)[0].0, "slices.field");
    let p = problems(SlicesConfig {
        centroids: vec![vec![1.0, 0.0], vec![1.0]],
        ..Default::default()
    });
    assert_eq!(p[0].0, "slices.centroids");
}

#[test]
fn slice_set_is_a_small_copy_set() {
    let mut s = SliceSet::EMPTY;
    assert!(s.is_empty());
    s.insert(31);
    s.insert(0);
    s.insert(5);
    assert_eq!(s.iter().collect::<Vec<_>>(), [0, 5, 31]);
    assert!(s.contains(5) && !s.contains(6) && !s.contains(99));
    assert_eq!(s.len(), 3);
}
