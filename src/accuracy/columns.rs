//! Typed access to the Arrow columns the job reads, whatever physical form the Parquet
//! writer chose (plain, large or view strings, dictionaries; timestamps in any unit).

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};

/// A string column of one batch.
pub enum StrCol<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
    Dict {
        /// Per row: null (only when the array has nulls).
        nulls: Option<Vec<bool>>,
        keys: Vec<usize>,
        values: Box<StrCol<'a>>,
    },
}

impl<'a> StrCol<'a> {
    /// `None` when the array is not a string type (or a dictionary of strings).
    pub fn new(a: &'a ArrayRef) -> Option<StrCol<'a>> {
        Self::from_dyn(a.as_ref())
    }

    fn from_dyn(a: &'a dyn Array) -> Option<StrCol<'a>> {
        Some(match a.data_type() {
            DataType::Utf8 => StrCol::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => StrCol::Large(a.as_string::<i64>()),
            DataType::Utf8View => StrCol::View(a.as_string_view()),
            DataType::Dictionary(_, _) => {
                let d = a.as_any_dictionary_opt()?;
                StrCol::Dict {
                    nulls: (a.null_count() > 0)
                        .then(|| (0..a.len()).map(|i| a.is_null(i)).collect()),
                    keys: d.normalized_keys(),
                    values: Box::new(Self::from_dyn(d.values().as_ref())?),
                }
            }
            _ => return None,
        })
    }

    /// Whether `t` is a type [`StrCol::new`] accepts.
    pub fn accepts(t: &DataType) -> bool {
        match t {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
            DataType::Dictionary(_, v) => Self::accepts(v),
            _ => false,
        }
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StrCol::Utf8(a) => (!a.is_null(i)).then(|| a.value(i)),
            StrCol::Large(a) => (!a.is_null(i)).then(|| a.value(i)),
            StrCol::View(a) => (!a.is_null(i)).then(|| a.value(i)),
            StrCol::Dict {
                nulls,
                keys,
                values,
            } => {
                if nulls.as_ref().is_some_and(|n| n[i]) {
                    None
                } else {
                    values.get(keys[i])
                }
            }
        }
    }
}

/// A timestamp column as µs since the epoch; integers count as µs (the shadow log's unit).
pub fn micros_column(a: &ArrayRef) -> Option<Vec<Option<i64>>> {
    fn collect<T: arrow_array::ArrowPrimitiveType<Native = i64>>(
        a: &ArrayRef,
        scale: impl Fn(i64) -> i64,
    ) -> Vec<Option<i64>> {
        a.as_primitive::<T>()
            .iter()
            .map(|v| v.map(&scale))
            .collect()
    }
    Some(match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            collect::<TimestampSecondType>(a, |v| v.saturating_mul(1_000_000))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            collect::<TimestampMillisecondType>(a, |v| v.saturating_mul(1_000))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            collect::<TimestampMicrosecondType>(a, |v| v)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            collect::<TimestampNanosecondType>(a, |v| v.div_euclid(1_000))
        }
        DataType::Int64 => collect::<Int64Type>(a, |v| v),
        _ => return None,
    })
}

/// Whether [`micros_column`] accepts `t`.
pub fn accepts_micros(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _) | DataType::Int64)
}

/// Any scalar column rendered as text per row (ids and labels of label files):
/// strings as they are, integers and booleans in decimal / `true` / `false`, floats in
/// Rust's shortest round-trip form. `None` for types that have no sensible text.
pub fn text_column(a: &ArrayRef) -> Option<Vec<Option<String>>> {
    if let Some(s) = StrCol::new(a) {
        return Some((0..a.len()).map(|i| s.get(i).map(str::to_owned)).collect());
    }
    macro_rules! prim {
        ($t:ty) => {
            a.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v.to_string()))
                .collect()
        };
    }
    Some(match a.data_type() {
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Boolean => a
            .as_boolean()
            .iter()
            .map(|v| v.map(|v| v.to_string()))
            .collect(),
        _ => return None,
    })
}

/// Label timestamps: timestamp columns in any unit, numbers as seconds since the epoch,
/// strings as RFC 3339. Unparseable values are `None` (they lose ties to dated rows).
pub fn label_ts_column(a: &ArrayRef) -> Option<Vec<Option<i64>>> {
    use super::files::{parse_timestamp, seconds_to_micros};
    if matches!(a.data_type(), DataType::Timestamp(_, _)) {
        return micros_column(a);
    }
    if let Some(s) = StrCol::new(a) {
        return Some(
            (0..a.len())
                .map(|i| s.get(i).and_then(parse_timestamp))
                .collect(),
        );
    }
    let cast = arrow_cast_f64(a)?;
    Some(
        cast.into_iter()
            .map(|v| v.and_then(seconds_to_micros))
            .collect(),
    )
}

fn arrow_cast_f64(a: &ArrayRef) -> Option<Vec<Option<f64>>> {
    macro_rules! prim {
        ($t:ty) => {
            a.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v as f64))
                .collect()
        };
    }
    Some(match a.data_type() {
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        _ => return None,
    })
}

/// Largest item index a shadow log or label file can name: the shadow log's `item` is
/// an Int32 (schema version 2).
pub const MAX_ITEM: u32 = i32::MAX as u32;

/// Marks a row whose `item` is not a valid index (negative, too large, not an integer):
/// greater than [`MAX_ITEM`], so it never equals a label's item.
pub const INVALID_ITEM: u32 = u32::MAX;

/// Whether [`item_column`] accepts `t`: integer types, or all-null.
pub fn accepts_item(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Null)
}

/// An `item` column (shadow log or label file) as per-row indices: null is item 0 (as a
/// row of a file without the column), a negative value or one above [`MAX_ITEM`] is
/// [`INVALID_ITEM`]. `None` when the type is not one [`accepts_item`] takes.
pub fn item_column(a: &ArrayRef) -> Option<Vec<u32>> {
    fn check(v: i128) -> u32 {
        if (0..=i128::from(MAX_ITEM)).contains(&v) {
            v as u32
        } else {
            INVALID_ITEM
        }
    }
    macro_rules! prim {
        ($t:ty) => {{
            let p = a.as_primitive::<$t>();
            if p.null_count() == 0 {
                p.values().iter().map(|&v| check(v as i128)).collect()
            } else {
                p.iter()
                    .map(|v| v.map_or(0, |v| check(v as i128)))
                    .collect()
            }
        }};
    }
    Some(match a.data_type() {
        DataType::Null => vec![0; a.len()],
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        _ => return None,
    })
}

/// An item index written as text (CSV fields, strings in label files): missing or empty
/// is item 0; otherwise only ASCII digits (no sign, no spaces, no fraction) up to
/// [`MAX_ITEM`], else [`INVALID_ITEM`].
pub fn item_from_text(s: Option<&str>) -> u32 {
    match s {
        None | Some("") => 0,
        Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<u64>()
            .ok()
            .filter(|&v| v <= u64::from(MAX_ITEM))
            .map_or(INVALID_ITEM, |v| v as u32),
        Some(_) => INVALID_ITEM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn items_from_columns_and_text() {
        let a: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![
            Some(0),
            Some(7),
            None,
            Some(-1),
            Some(i64::from(MAX_ITEM)),
            Some(i64::from(MAX_ITEM) + 1),
        ]));
        assert_eq!(
            item_column(&a),
            Some(vec![0, 7, 0, INVALID_ITEM, MAX_ITEM, INVALID_ITEM])
        );
        let a: ArrayRef = Arc::new(arrow_array::Int32Array::from(vec![3, 0, 1]));
        assert_eq!(item_column(&a), Some(vec![3, 0, 1]));
        let a: ArrayRef = Arc::new(arrow_array::Float64Array::from(vec![1.0]));
        assert_eq!(item_column(&a), None);
        assert!(!accepts_item(&DataType::Utf8) && accepts_item(&DataType::UInt16));
        for (text, want) in [
            (None, 0),
            (Some(""), 0),
            (Some("0"), 0),
            (Some("007"), 7),
            (Some("2147483647"), MAX_ITEM),
            (Some("2147483648"), INVALID_ITEM),
            (Some("99999999999999999999999"), INVALID_ITEM),
            (Some("-1"), INVALID_ITEM),
            (Some("+1"), INVALID_ITEM),
            (Some("1.0"), INVALID_ITEM),
            (Some(" 1"), INVALID_ITEM),
            (Some("x"), INVALID_ITEM),
        ] {
            assert_eq!(item_from_text(text), want, "{text:?}");
        }
    }
}
