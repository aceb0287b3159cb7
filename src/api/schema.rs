//! Building blocks for the parts of the OpenAPI document that are written
//! by hand rather than derived: the JSON a domain type parses from a value
//! (a CloudEvent keeps every attribute it was given) and the query
//! parameters that `domain::query` parses with Altinn's texts. Each such
//! part sits beside the handler that parses it; these helpers only keep
//! the builders short.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{RefOr, Required, Schema};

/// A string.
pub fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A string or `null`.
pub fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type([Type::String, Type::Null].into_iter().collect::<SchemaType>())
}

/// A time with its offset (RFC 3339).
pub fn date_time() -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}

/// A whole number.
pub fn integer() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// An array of `items`.
pub fn array(items: impl Into<RefOr<Schema>>) -> ArrayBuilder {
    ArrayBuilder::new().items(items.into())
}

/// An optional parameter in `place`.
pub fn param(place: ParameterIn, name: &str, schema: impl Into<RefOr<Schema>>, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// An optional query parameter that repeats (`type=a&type=b`).
pub fn repeated(name: &str, items: impl Into<RefOr<Schema>>, description: &str) -> Parameter {
    let mut p = param(ParameterIn::Query, name, array(items), description);
    p.style = Some(ParameterStyle::Form);
    p.explode = Some(true);
    p
}
