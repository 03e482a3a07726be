//! Enumerated settings by name. Each such enum has one table, written with [`value_names!`],
//! from its values to the names the command line accepts and checkpoints store: the table gives
//! the enum `ALL`, `name()`, `Display` and clap's `ValueEnum` (so `--help` lists the choices,
//! each with one line of help, and shells can complete them). Types whose names are stored in
//! checkpoints add `parse` through [`parse`], over the same table: a stored name must never
//! change, or old checkpoints stop loading.
use crate::error::{Error, Result};

/// A fieldless enum declared together with its name table, so that each value is written once:
///
/// ```ignore
/// value_names! {
///     /// The shape of a noise-scale curve.
///     #[derive(Default)]
///     pub enum SigmaShape {
///         /// `sigma_max` throughout.
///         #[default]
///         Constant = "constant" => "sigma_max at every level",
///         Geometric = "geometric" | "geo" => "sigma_min (sigma_max / sigma_min)^t",
///     }
/// }
/// ```
///
/// The enum always derives `Clone, Copy, Debug, PartialEq, Eq`; its other attributes (its doc
/// comment, further derives) and each variant's attributes (doc comment, `#[default]`) pass
/// through. `pub enum SigmaShape parsed as "sigma schedule" { .. }` also gives it `parse`
/// (through [`parse`], errors calling it a "sigma schedule"), for names read back from
/// checkpoints. The first string is the name written everywhere; names after `|` are aliases,
/// accepted by the command line and by `parse` but never written; the last string is the value's
/// `--help` line.
macro_rules! value_names {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident $(parsed as $what:literal)? {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $name:literal $(| $alias:literal)* => $help:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $ty {
            $(
                $(#[$vmeta])*
                $variant
            ),+
        }

        impl $ty {
            /// Every value, in the order `--help` lists them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name the command line takes and checkpoints store.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        $(
            impl $ty {
                /// The value called `name` (its name or an alias, exactly), as checkpoints
                /// store it; any other name is an error listing the names.
                pub fn parse(name: &str) -> $crate::error::Result<Self> {
                    $crate::named::parse(name, $what)
                }
            }
        )?

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::clap::ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }

            fn to_possible_value(&self) -> Option<::clap::builder::PossibleValue> {
                Some(match self {
                    $($ty::$variant => ::clap::builder::PossibleValue::new($name)
                        $(.alias($alias))*
                        .help($help)),+
                })
            }
        }
    };
}
pub(crate) use value_names;

/// The value of `T` called `name` (its name or an alias, exactly), or an error naming `what`
/// and listing the names.
pub fn parse<T: clap::ValueEnum>(name: &str, what: &str) -> Result<T> {
    T::from_str(name, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        Error::invalid(format!(
            "unknown {what} '{name}': expected one of {}",
            names.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    value_names! {
        /// A test enum.
        #[derive(Default, Hash)]
        enum Fruit {
            #[default]
            Apple = "apple" => "a pome",
            /// Declared with an alias.
            BloodOrange = "blood_orange" | "blood-orange" => "a citrus",
        }
    }

    #[test]
    fn names_aliases_help_and_errors_come_from_one_table() {
        assert_eq!(Fruit::ALL, [Fruit::Apple, Fruit::BloodOrange]);
        assert_eq!(Fruit::default(), Fruit::Apple);
        assert_eq!(Fruit::BloodOrange.name(), "blood_orange");
        assert_eq!(Fruit::BloodOrange.to_string(), "blood_orange");
        for &f in Fruit::ALL {
            assert_eq!(super::parse::<Fruit>(f.name(), "fruit").unwrap(), f);
            let pv = f.to_possible_value().unwrap();
            assert_eq!(pv.get_name(), f.name());
            assert!(pv.get_help().is_some());
        }
        assert_eq!(
            super::parse::<Fruit>("blood-orange", "fruit").unwrap(),
            Fruit::BloodOrange
        );
        let err = super::parse::<Fruit>("Apple", "fruit")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown fruit 'Apple'") && err.contains("apple, blood_orange"),
            "{err}"
        );
    }
}
