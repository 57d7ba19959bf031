// pybind11 bindings: the only file of the core that knows Python. It checks arrays (Release builds
// turn Eigen's asserts off, so nothing unchecked reaches a kernel), picks the dtype, releases the
// GIL around the numerical work and maps C++ exceptions to ValueError / FloatingPointError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <Eigen/Core>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine.h"
#include "scratch.h"
#include "sequence.h"
#include "threads.h"

namespace py = pybind11;
using namespace tbptt;

#define TBPTT_STR2(x) #x
#define TBPTT_STR(x) TBPTT_STR2(x)
#define TBPTT_MODULE_NAME(isa) TBPTT_CONCAT(_core_, isa)
#define TBPTT_CONCAT(a, b) TBPTT_CONCAT2(a, b)
#define TBPTT_CONCAT2(a, b) a##b

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

std::string shape_of(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s << (d ? ", " : "") << a.shape(d);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

void expect_shape(const char* name, const py::array& a, std::initializer_list<py::ssize_t> shape) {
    bool ok = a.ndim() == py::ssize_t(shape.size());
    py::ssize_t d = 0;
    for (py::ssize_t n : shape) ok = ok && a.shape(d++) == n;
    if (!ok) {
        std::ostringstream s;
        s << name << " has shape " << shape_of(a) << ", expected (";
        d = 0;
        for (py::ssize_t n : shape) s << (d++ ? ", " : "") << n;
        s << ")";
        throw py::value_error(s.str());
    }
}

template <typename V>
py::array to_array(const Buffer<V>& v) {
    py::array_t<V> a(py::ssize_t(v.size()));
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
}

// A 0-d array: a snapshot's named scalar.
template <typename V>
py::array scalar(V v) {
    py::array_t<V> a(std::vector<py::ssize_t>{});
    *a.mutable_data() = v;
    return a;
}

// v as an array of `shape` (the caller's sizes match v's).
template <typename V>
py::array shaped(const Buffer<V>& v, std::vector<py::ssize_t> shape) {
    py::array_t<V> a(shape);
    if (size_t(a.size()) != v.size())
        throw std::logic_error("snapshot: an entry's size does not fit its shape");
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
}

// A named scalar of a snapshot: a 0-d array, a NumPy scalar or a Python number.
int64_t integer(const py::handle& h) {
    return py::int_(py::reinterpret_borrow<py::object>(h)).cast<int64_t>();
}

template <typename V>
Buffer<V> from_array(const py::handle& h) {
    auto a = py::array_t<V, py::array::c_style | py::array::forcecast>::ensure(h);
    if (!a) throw py::value_error("engine state: an entry is not an array");
    return Buffer<V>(a.data(), a.data() + a.size());
}

template <typename A>
auto data_of(const std::optional<A>& a) -> decltype(a->data()) {
    return a ? a->data() : nullptr;
}

// The model's inputs x: (T, B) token ids in [0, I) into *ids, or (T, B, I) features into
// *features; returns them as the engine reads them.
// with_time = false: one step, x (B,) token ids or (B, I) features.
template <typename T>
Inputs<T> check_inputs(const py::array& x, bool tokens, const ModelShape& m, CArray<int64_t>* ids,
                       CArray<T>* features, bool with_time = true) {
    const py::ssize_t T_ = with_time ? x.shape(0) : 1, B = x.shape(with_time ? 1 : 0);
    if (tokens) {
        *ids = CArray<int64_t>::ensure(x);
        if (!*ids) throw py::type_error("token ids x must be a C-contiguous int64 array");
        if (with_time)
            expect_shape("x", *ids, {T_, B});
        else
            expect_shape("x", *ids, {B});
        const int64_t* id = ids->data();
        for (py::ssize_t i = 0; i < ids->size(); ++i)
            if (id[i] < 0 || id[i] >= m.I) throw py::value_error("x: token id out of range");
        return Inputs<T>::tokens(ids->data());
    }
    *features = CArray<T>::ensure(x);
    if (!*features) throw py::type_error("x must be a C-contiguous array of the model's dtype");
    if (with_time)
        expect_shape("x", *features, {T_, B, m.I});
    else
        expect_shape("x", *features, {B, m.I});
    return Inputs<T>::features(features->data());
}

// The data of `a`, an array the engine writes into: C-contiguous, writeable, of dtype T and
// the given shape (else TypeError / ValueError). No copy: the caller sees the values there.
template <typename T>
T* writeable_output(const py::array& a, std::initializer_list<py::ssize_t> shape) {
    if (!py::isinstance<CArray<T>>(a) || !(a.flags() & py::array::c_style))
        throw py::type_error("outputs must be a C-contiguous array of the model's dtype");
    if (!a.writeable()) throw py::value_error("outputs must be writeable");
    expect_shape("outputs", a, shape);
    return static_cast<T*>(py::array(a).mutable_data());
}

// The model's shape for a cell (its gate rows); ValueError for sizes < 1 or an unknown cell.
ModelShape shape_of_model(const std::string& cell, int I, int H, int O, int L) {
    if (I < 1 || H < 1 || O < 1 || L < 1) throw py::value_error("sizes must be >= 1");
    ModelShape m{I, H, O, L};
    m.gates = cell_traits(cell).gates;  // std::invalid_argument (ValueError) for another name
    return m;
}

// The state tensors a cell carries, as torch has them: (h, c) for the LSTM, (h,) otherwise.
template <typename T>
py::tuple state_tuple(const CArray<T>& h, const CArray<T>& carry, const CellTraits& cell) {
    if (cell.carried) return py::make_tuple(h, carry);
    return py::make_tuple(h);
}

// The module's Divergence exception (a FloatingPointError), set when the module is initialised.
py::object& divergence_type() {
    static py::object* type = new py::object();  // never destroyed: no decref after finalisation
    return *type;
}

OptimizerConfig optimizer_from(const py::dict& d) {
    OptimizerConfig o;
    const std::string name = py::str(d["name"]);
    o.lr = py::float_(d["lr"]);
    if (name == "sgd") {
        o.kind = OptimizerConfig::Kind::sgd;
        o.momentum = py::float_(d["momentum"]);
        if (d.contains("weight_decay")) o.weight_decay = py::float_(d["weight_decay"]);
    } else if (name == "adam" || name == "adamw") {
        o.kind = name == "adam" ? OptimizerConfig::Kind::adam : OptimizerConfig::Kind::adamw;
        if (name == "adamw") o.weight_decay = py::float_(d["weight_decay"]);
        py::sequence betas = d["betas"];
        o.beta1 = py::float_(betas[0]);
        o.beta2 = py::float_(betas[1]);
        o.eps = py::float_(d["eps"]);
    } else {
        throw py::value_error("optimizer name must be 'sgd', 'adam' or 'adamw', got '" + name +
                              "'");
    }
    return o;
}

// The engine and the parameter array it updates in place (kept alive here).
template <typename T>
struct PyEngine {
    CArray<T> params;
    std::unique_ptr<Engine<T>> engine;

    PyEngine(CArray<T> params_, const std::string& cell, int I, int H, int O, int L, int k1, int k2,
             const std::string& loss, const py::dict& optimizer, std::optional<double> clip_norm,
             double dropout, double head_dropout, uint64_t seed, bool recompute)
        : params(std::move(params_)) {
        EngineConfig c;
        c.cell = cell;
        c.shape = shape_of_model(cell, I, H, O, L);
        c.k1 = k1;
        c.k2 = k2;
        c.loss = loss_of(loss);  // std::invalid_argument (ValueError) for another name
        c.optimizer = optimizer_from(optimizer);
        c.clip_norm = clip_norm.value_or(0.0);
        if (!(dropout >= 0.0 && dropout < 1.0) || !(head_dropout >= 0.0 && head_dropout < 1.0))
            throw py::value_error("dropout and head_dropout must be in [0, 1)");
        c.dropout = dropout, c.head_dropout = head_dropout, c.seed = seed;
        c.recompute = recompute;
        expect_shape("params", params, {py::ssize_t(c.shape.num_params())});
        if (!params.writeable()) throw py::value_error("params must be writeable");
        engine = std::make_unique<Engine<T>>(c, params.mutable_data());
    }

    // outputs: None, or a writeable (T, B, O) array that receives the head's outputs of each step.
    py::list train(const py::array& x, bool tokens, const py::array& y,
                   std::optional<CArray<T>> mask, std::optional<CArray<uint8_t>> resets,
                   std::optional<py::array> outputs) {
        const ModelShape& m = engine->shape();
        if (x.ndim() < 2) throw py::value_error("x must have shape (T, B, ...)");
        const py::ssize_t T_ = x.shape(0), B = x.shape(1);
        if (engine->num_streams() && B != engine->num_streams())
            throw py::value_error("x.shape[1] (B) changed between calls");
        CArray<int64_t> ids, labels;
        CArray<T> features, targets;
        const Inputs<T> inputs = check_inputs(x, tokens, m, &ids, &features);
        const bool values = !loss_traits(engine->loss()).classes;
        if (values) {
            targets = CArray<T>::ensure(y);
            if (!targets)
                throw py::type_error("y must be a C-contiguous array of the model's dtype");
            expect_shape("y", targets, {T_, B, py::ssize_t(target_values(engine->loss(), m.O))});
        } else {
            labels = CArray<int64_t>::ensure(y);
            if (!labels) throw py::type_error("y must be a C-contiguous int64 array of class ids");
            expect_shape("y", labels, {T_, B});
            for (py::ssize_t i = 0; i < labels.size(); ++i)
                if (labels.data()[i] < 0 || labels.data()[i] >= m.O)
                    throw py::value_error("y: class id out of range");
        }
        if (mask) expect_shape("mask", *mask, {T_, B});
        if (resets) expect_shape("resets", *resets, {T_, B});
        T* outputs_out =
            outputs ? writeable_output<T>(*outputs, {T_, B, py::ssize_t(m.O)}) : nullptr;
        const Targets<T> targets_in = values ? Targets<T>::of_values(targets.data(), data_of(mask))
                                             : Targets<T>::of_classes(labels.data(), data_of(mask));
        std::vector<double> losses;
        std::string diverged;
        {
            py::gil_scoped_release release;
            try {
                engine->train(T_, int(B), inputs, targets_in, data_of(resets), &losses,
                              outputs_out);
            } catch (const Divergence& error) {
                diverged = error.what();
            }
        }
        if (!diverged.empty()) {  // a FloatingPointError that also carries the updates applied
            py::object error = divergence_type()(diverged);
            error.attr("losses") = py::array_t<double>(py::ssize_t(losses.size()), losses.data());
            PyErr_SetObject(divergence_type().ptr(), error.ptr());
            throw py::error_already_set();
        }
        return py::cast(losses);
    }

    // The next step's outputs for x, (B, I) features or (B,) token ids, written into `outputs`
    // (a writeable (B, O) array), without advancing: Engine::peek.
    void peek(const py::array& x, bool tokens, const py::array& outputs) {
        const ModelShape& m = engine->shape();
        if (x.ndim() < 1) throw py::value_error("x must have shape (B, ...)");
        const py::ssize_t B = x.shape(0);
        if (B < 1 || (engine->num_streams() && B != engine->num_streams()))
            throw py::value_error("x.shape[0] (B) must be the trainer's number of streams");
        CArray<int64_t> ids;
        CArray<T> features;
        const Inputs<T> inputs = check_inputs(x, tokens, m, &ids, &features, /*with_time=*/false);
        T* out = writeable_output<T>(outputs, {B, py::ssize_t(m.O)});
        py::gil_scoped_release release;
        engine->peek(int(B), inputs, out);
    }

    std::optional<double> flush() {
        double loss;
        bool made;
        {
            py::gil_scoped_release release;
            made = engine->flush(&loss);
        }
        if (!made) return std::nullopt;
        return loss;
    }

    py::object state() const {
        const int B = engine->num_streams();
        if (B == 0) return py::none();
        const ModelShape& m = engine->shape();
        const CellTraits& cell = engine->cell();
        CArray<T> h({m.L, B, m.H}), carry({m.L, B, cell.carried * m.H});
        engine->state(h.mutable_data(), carry.mutable_data());
        return state_tuple(h, carry, cell);
    }

    // The engine's state in the snapshot schema (python/tbptt/_snapshot.py lists the entries;
    // the adapter adds "schema" and "cell"): named scalars (0-d arrays) and arrays, and back.
    py::dict snapshot() const {
        const typename Engine<T>::Snapshot s = engine->snapshot();
        const ModelShape& m = engine->shape();
        const CellTraits& cell = engine->cell();
        const py::ssize_t n = s.held, B = s.num_streams, r = s.pending, L = m.L, H = m.H;
        const py::ssize_t K = cell.keeps_gates ? (cell.gates + cell.extra) * H : 0,
                          C = cell.carried * H, O = m.O, P = m.num_params();
        py::dict d;
        d["num_streams"] = scalar(s.num_streams), d["tokens"] = scalar(s.tokens);
        d["steps"] = scalar(s.steps), d["pending"] = scalar(s.pending);
        d["updates"] = scalar(s.updates), d["reset_next"] = scalar(s.reset_next);
        d["optimizer_steps"] = scalar(s.optimizer_steps), d["fresh_from"] = scalar(s.fresh_from);
        d["loss_sum"] = scalar(s.loss_sum), d["weight_sum"] = scalar(s.weight_sum);
        d["last_weight_sum"] = scalar(s.last_weight_sum);
        d["window/x"] = s.tokens ? shaped(s.ids, {n, B}) : shaped(s.x, {n, B, m.I});
        d["window/reset"] = shaped(s.reset, {n, B}).attr("astype")("bool");
        d["window/gates"] = shaped(s.gates, {n, L, B, K});
        d["window/h"] = shaped(s.h, {n, L, B, H}), d["window/c"] = shaped(s.carry, {n, L, B, C});
        d["window/h_in"] = shaped(s.h_in, {L, B, H});
        d["window/c_in"] = shaped(s.carry_in, {L, B, C});
        d["pending/out"] = shaped(s.outputs, {r, B, O}), d["pending/dy"] = shaped(s.dy, {r, B, O});
        const py::ssize_t Y = target_values(engine->loss(), m.O);
        d["pending/y"] = loss_traits(engine->loss()).classes ? shaped(s.classes, {r, B})
                                                             : shaped(s.values, {r, B, Y});
        d["pending/w"] = shaped(s.weights, {r, B});
        d["optimizer/m"] = shaped(s.first_moment, {P});
        d["optimizer/v"] = shaped(s.second_moment, {P});
        return d;
    }

    // The caller (tbptt.engine) has checked the entries against the schema; sizes are checked
    // again here, so nothing unchecked reaches the engine.
    void restore(const py::dict& d) {
        typename Engine<T>::Snapshot s;
        try {
            s.num_streams = integer(d["num_streams"]), s.tokens = integer(d["tokens"]) != 0;
            s.steps = integer(d["steps"]), s.pending = integer(d["pending"]);
            s.updates = integer(d["updates"]), s.reset_next = integer(d["reset_next"]) != 0;
            s.optimizer_steps = integer(d["optimizer_steps"]);
            s.fresh_from = integer(d["fresh_from"]);
            s.loss_sum = py::float_(d["loss_sum"]), s.weight_sum = py::float_(d["weight_sum"]);
            s.last_weight_sum = py::float_(d["last_weight_sum"]);
            const py::array h = py::array::ensure(d["window/h"]);
            if (!h || h.ndim() != 4)
                throw py::value_error("engine state: window/h must be (n, L, B, H)");
            s.held = h.shape(0);
            if (s.tokens)
                s.ids = from_array<int64_t>(d["window/x"]);
            else
                s.x = from_array<T>(d["window/x"]);
            s.reset = from_array<uint8_t>(d["window/reset"]);
            s.gates = from_array<T>(d["window/gates"]), s.h = from_array<T>(h);
            s.carry = from_array<T>(d["window/c"]);
            s.h_in = from_array<T>(d["window/h_in"]), s.carry_in = from_array<T>(d["window/c_in"]);
            s.outputs = from_array<T>(d["pending/out"]), s.dy = from_array<T>(d["pending/dy"]);
            if (loss_traits(engine->loss()).classes)
                s.classes = from_array<int64_t>(d["pending/y"]);
            else
                s.values = from_array<T>(d["pending/y"]);
            s.weights = from_array<T>(d["pending/w"]);
            s.first_moment = from_array<T>(d["optimizer/m"]);
            s.second_moment = from_array<T>(d["optimizer/v"]);
        } catch (py::error_already_set& e) {
            throw py::value_error(std::string("engine state is incomplete: ") + e.what());
        }
        engine->restore(s);
    }

    CArray<T> gradient() const {
        CArray<T> out(py::ssize_t(engine->shape().num_params()));
        engine->gradient(out.mutable_data());
        return out;
    }

    // Data-parallel training: `reduce()` (a Python callable, no arguments) is called between
    // backward and apply of every update, with the GIL, to all-reduce reduce_buffer() in place.
    // None: one process. The engine holds a plain pointer to this object, which owns the callable.
    void set_reduce(py::object reduce) {
        reduce_fn = std::move(reduce);
        if (reduce_fn.is_none()) {
            engine->set_reduce(nullptr);
            return;
        }
        engine->set_reduce([this]() {
            py::gil_scoped_acquire gil;
            reduce_fn();
        });
    }
    py::object reduce_fn = py::none();
};

// A NumPy view (no copy) of the engine's reduce buffer [num_params + 2]: gradient, Σ w·loss, Σ w.
// It keeps the engine object alive; the buffer never moves.
template <typename T>
py::array reduce_buffer(py::object self) {
    PyEngine<T>& e = self.cast<PyEngine<T>&>();
    return py::array_t<T>(py::ssize_t(e.engine->reduce_buffer_size()), e.engine->reduce_buffer(),
                          self);
}

template <typename T>
void bind_engine(py::module_& m, const char* name) {
    py::class_<PyEngine<T>>(m, name)
        .def(py::init<CArray<T>, const std::string&, int, int, int, int, int, int,
                      const std::string&, const py::dict&, std::optional<double>, double, double,
                      uint64_t, bool>(),
             py::arg("params"), py::arg("cell"), py::arg("input_size"), py::arg("hidden_size"),
             py::arg("output_size"), py::arg("num_layers"), py::arg("k1"), py::arg("k2"),
             py::arg("loss"), py::arg("optimizer"), py::arg("clip_norm"), py::arg("dropout") = 0.0,
             py::arg("head_dropout") = 0.0, py::arg("seed") = 0, py::arg("recompute") = false)
        .def("train", &PyEngine<T>::train, py::arg("x"), py::arg("tokens"), py::arg("y"),
             py::arg("mask").none(true), py::arg("resets").none(true),
             py::arg("outputs").none(true) = py::none())
        .def("peek", &PyEngine<T>::peek, py::arg("x"), py::arg("tokens"), py::arg("outputs"))
        .def("flush", &PyEngine<T>::flush)
        .def("reset_state", [](PyEngine<T>& e) { e.engine->reset_state(); })
        .def("set_lr", [](PyEngine<T>& e, double lr) { e.engine->set_lr(lr); })
        .def("state", &PyEngine<T>::state)
        .def("gradient", &PyEngine<T>::gradient)
        .def("set_reduce", &PyEngine<T>::set_reduce, py::arg("reduce").none(true))
        .def("reduce_buffer", &reduce_buffer<T>)
        .def(
            "set_stream_offset",
            [](PyEngine<T>& e, int64_t offset) { e.engine->set_stream_offset(offset); },
            py::arg("offset"))
        .def("horizon",
             [](const PyEngine<T>& e) {
                 const ModelShape& m = e.engine->shape();
                 const Buffer<double>& norms = e.engine->horizon_norms();
                 const Buffer<int64_t>& updates = e.engine->horizon_updates();
                 const py::ssize_t k2 = py::ssize_t(updates.size());
                 py::array_t<double> sums({py::ssize_t(2), py::ssize_t(m.L), k2});
                 std::copy(norms.begin(), norms.end(), sums.mutable_data());
                 return py::make_tuple(sums, to_array(updates));
             })
        .def("reset_horizon", [](PyEngine<T>& e) { e.engine->reset_horizon(); })
        .def("snapshot", &PyEngine<T>::snapshot)
        .def("restore", &PyEngine<T>::restore, py::arg("state"))
        .def_property_readonly("pending_steps",
                               [](const PyEngine<T>& e) { return e.engine->pending_steps(); })
        .def_property_readonly("updates", [](const PyEngine<T>& e) { return e.engine->updates(); })
        .def_property_readonly("steps", [](const PyEngine<T>& e) { return e.engine->steps(); });
}

template <typename T>
py::tuple predict_impl(const std::string& cell_name, const CArray<T>& params, const ModelShape& m,
                       const py::array& x, bool tokens, const py::tuple& state) {
    expect_shape("params", params, {py::ssize_t(m.num_params())});
    const CellTraits cell = cell_traits(cell_name);
    const py::ssize_t T_ = x.shape(0), B = x.shape(1);
    if (state.size() != size_t(1 + cell.carried))
        throw py::value_error("state must hold " + std::to_string(1 + cell.carried) +
                              " arrays for this cell, got " + std::to_string(state.size()));
    CArray<T> h0 = CArray<T>::ensure(state[0]), carry0({m.L, int(B), 0});
    if (!h0) throw py::type_error("state h must be an array of the model's dtype");
    expect_shape("state h", h0, {m.L, B, m.H});
    if (cell.carried) {
        carry0 = CArray<T>::ensure(state[1]);
        if (!carry0) throw py::type_error("state c must be an array of the model's dtype");
        expect_shape("state c", carry0, {m.L, B, cell.carried * m.H});
    }
    CArray<int64_t> ids;
    CArray<T> features;
    const Inputs<T> inputs = check_inputs(x, tokens, m, &ids, &features);
    CArray<T> out({T_, B, py::ssize_t(m.O)}), h({m.L, int(B), m.H}),
        carry({m.L, int(B), cell.carried * m.H});
    if (T_ > 0 && B > 0) {
        T *o = out.mutable_data(), *hp = h.mutable_data(), *cp = carry.mutable_data();
        py::gil_scoped_release release;
        predict<T>(cell_name, m, params.data(), T_, int(B), inputs, h0.data(), carry0.data(), o, hp,
                   cp);
    } else {
        std::copy(h0.data(), h0.data() + h0.size(), h.mutable_data());
        std::copy(carry0.data(), carry0.data() + carry0.size(), carry.mutable_data());
    }
    return py::make_tuple(out, state_tuple(h, carry, cell));
}

py::tuple predict_any(const py::array& params, const std::string& cell, int I, int H, int O, int L,
                      const py::array& x, bool tokens, const py::tuple& state) {
    if (x.ndim() < 2) throw py::value_error("x must have shape (T, B, ...)");
    const ModelShape m = shape_of_model(cell, I, H, O, L);
    if (py::isinstance<py::array_t<float>>(params))
        return predict_impl<float>(cell, CArray<float>::ensure(params), m, x, tokens, state);
    if (py::isinstance<py::array_t<double>>(params))
        return predict_impl<double>(cell, CArray<double>::ensure(params), m, x, tokens, state);
    throw py::type_error("params must be float32 or float64");
}

// ---- the stateless sequence pass of one layer (sequence.h), for tbptt.torch ------------------

// An array of dtype T and the given shape (no copy when it already is one: tbptt.torch passes
// contiguous tensors of the layer's dtype), else TypeError / ValueError naming it.
// (An empty shape: any shape.)
template <typename T>
CArray<T> sequence_array(const char* name, const py::handle& h,
                         const std::vector<py::ssize_t>& shape) {
    CArray<T> a = CArray<T>::ensure(h);
    if (!a) throw py::type_error(std::string(name) + " must be an array of the layer's dtype");
    bool ok = shape.empty() || a.ndim() == py::ssize_t(shape.size());
    for (size_t d = 0; ok && d < shape.size(); ++d) ok = a.shape(py::ssize_t(d)) == shape[d];
    if (!ok) {
        std::ostringstream message;
        message << name << " has shape " << shape_of(a) << ", expected (";
        for (size_t d = 0; d < shape.size(); ++d) message << (d ? ", " : "") << shape[d];
        message << (shape.size() == 1 ? ",)" : ")");
        throw py::value_error(message.str());
    }
    return a;
}

// A new array of the given shape in memory from the pool (scratch.h), given back when NumPy frees
// it: a training loop gets the same blocks at every step instead of new pages.
template <typename T>
CArray<T> pooled_array(const std::vector<py::ssize_t>& shape) {
    size_t n = 1;
    for (py::ssize_t d : shape) n *= size_t(d);
    auto* block = new std::pair<void*, size_t>(Scratch<T>(n).release());
    py::capsule owner(block, [](void* p) {
        auto* b = static_cast<std::pair<void*, size_t>*>(p);
        ScratchPool::instance().give(b->first, b->second);
        delete b;
    });
    return CArray<T>(shape, static_cast<T*>(block->first), owner);
}

// The rows of a sequence pass (sequence.h): x (T, B, I) padded, or with batch_sizes (T,) x (N, I)
// packed (torch's PackedSequence: N = Σ batch_sizes, non-increasing, each in [1, B]). Returns the
// rows and the leading shape of every per-row array ((T, B) or (N,)).
std::pair<SequenceRows, std::vector<py::ssize_t>> rows_of(const py::array& x,
                                                          const py::object& batch_sizes) {
    if (batch_sizes.is_none()) {
        if (x.ndim() != 3) throw py::value_error("x must have shape (T, B, I), got " + shape_of(x));
        return {SequenceRows::padded(int(x.shape(0)), int(x.shape(1))), {x.shape(0), x.shape(1)}};
    }
    auto sizes =
        py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(batch_sizes);
    if (!sizes || sizes.ndim() != 1)
        throw py::value_error("batch_sizes must be a 1-D integer array");
    if (x.ndim() != 2) throw py::value_error("packed x must have shape (N, I), got " + shape_of(x));
    const int64_t* b = sizes.data();
    int64_t total = 0;
    for (py::ssize_t t = 0; t < sizes.size(); ++t) {
        if (b[t] < 1 || (t && b[t] > b[t - 1]))
            throw py::value_error("batch_sizes must be >= 1 and non-increasing");
        total += b[t];
    }
    if (total != x.shape(0))
        throw py::value_error("packed x has " + std::to_string(x.shape(0)) +
                              " rows, batch_sizes sum to " + std::to_string(total));
    return {SequenceRows::packed(b, int(sizes.size())), {x.shape(0)}};
}

std::vector<py::ssize_t> shape_with(std::vector<py::ssize_t> leading, py::ssize_t last) {
    leading.push_back(last);
    return leading;
}

// A layer's state entering the sequence and its weights, checked against the sizes.
template <typename T>
struct SequenceLayer {
    CArray<T> h0, carry0, W_ih, W_hh, b_ih, b_hh;

    SequenceLayer(const py::handle& h0_, const py::handle& carry0_, const py::handle& W_ih_,
                  const py::handle& W_hh_, const py::handle& b_ih_, const py::handle& b_hh_,
                  py::ssize_t B, py::ssize_t I, py::ssize_t H, const CellTraits& traits)
        : h0(sequence_array<T>("h0", h0_, {B, H})),
          carry0(sequence_array<T>("carry0", carry0_, {B, traits.carried * H})),
          W_ih(sequence_array<T>("W_ih", W_ih_, {traits.gates * H, I})),
          W_hh(sequence_array<T>("W_hh", W_hh_, {traits.gates * H, H})),
          b_ih(sequence_array<T>("b_ih", b_ih_, {traits.gates * H})),
          b_hh(sequence_array<T>("b_hh", b_hh_, {traits.gates * H})) {}

    LayerWeights<T> weights() const { return {W_ih.data(), W_hh.data(), b_ih.data(), b_hh.data()}; }
};

// What the forward keeps for the backward, owned here (never copied into Python), with the rows
// and direction it was made for.
template <typename T>
struct SequenceTape {
    std::string cell;
    SequenceRows rows;
    std::vector<py::ssize_t> leading;  // (T, B) or (N,)
    int I = 0, H = 0;
    bool reverse = false;
    Scratch<T> gates, extra, carry;
};

template <typename T>
py::tuple sequence_forward_impl(const std::string& cell_name, const py::array& x_in,
                                const py::handle& h0_in, const py::handle& carry0_in,
                                const py::handle& W_ih_in, const py::handle& W_hh_in,
                                const py::handle& b_ih_in, const py::handle& b_hh_in, bool reverse,
                                bool keep, const py::object& batch_sizes) {
    std::unique_ptr<Cell<T>> cell = make_cell<T>(cell_name);
    if (!cell) throw py::value_error(unknown_cell_message(cell_name));
    auto [rows, leading] = rows_of(x_in, batch_sizes);
    const py::ssize_t B = rows.B, I = x_in.shape(x_in.ndim() - 1);
    const py::array h0_any = py::array::ensure(h0_in);
    const py::ssize_t H = h0_any && h0_any.ndim() == 2 ? h0_any.shape(1) : 0;
    if (H < 1) throw py::value_error("h0 must have shape (B, H) with H >= 1");
    const CellTraits& traits = cell->traits;
    const py::ssize_t G = traits.gates * H, E = traits.extra * H, C = traits.carried * H;
    CArray<T> x = sequence_array<T>("x", x_in, {});
    const SequenceLayer<T> layer(h0_in, carry0_in, W_ih_in, W_hh_in, b_ih_in, b_hh_in, B, I, H,
                                 traits);
    auto tape = std::make_unique<SequenceTape<T>>();
    tape->cell = cell_name, tape->I = int(I), tape->H = int(H), tape->reverse = reverse;
    const size_t n = size_t(rows.rows());
    if (keep) tape->gates = Scratch<T>(n * G), tape->extra = Scratch<T>(n * E);
    tape->carry = Scratch<T>(n * C);
    CArray<T> h = pooled_array<T>(shape_with(leading, H)), h_n({B, H}), carry_n({B, C});
    {
        // Inference (keep false): no gates kept, the forward's own buffers (sequence.h).
        const SequenceSteps<T> out{keep ? tape->gates.data() : nullptr,
                                   keep ? tape->extra.data() : nullptr, tape->carry.data(),
                                   h.mutable_data()};
        T *hn = h_n.mutable_data(), *cn = carry_n.mutable_data();
        py::gil_scoped_release release;
        sequence_forward<T>(*cell, layer.weights(), rows, x.data(), layer.h0.data(),
                            layer.carry0.data(), int(I), int(H), reverse, out, hn, cn);
    }
    py::object kept = py::none();
    if (keep) {
        tape->rows = std::move(rows), tape->leading = std::move(leading);
        kept = py::cast(std::move(tape));
    }
    return py::make_tuple(h, h_n, carry_n, kept);
}

py::tuple sequence_forward_any(const std::string& cell, const py::array& x, const py::handle& h0,
                               const py::handle& carry0, const py::handle& W_ih,
                               const py::handle& W_hh, const py::handle& b_ih,
                               const py::handle& b_hh, bool reverse, bool keep,
                               const py::object& batch_sizes) {
    if (py::isinstance<py::array_t<float>>(x))
        return sequence_forward_impl<float>(cell, x, h0, carry0, W_ih, W_hh, b_ih, b_hh, reverse,
                                            keep, batch_sizes);
    if (py::isinstance<py::array_t<double>>(x))
        return sequence_forward_impl<double>(cell, x, h0, carry0, W_ih, W_hh, b_ih, b_hh, reverse,
                                             keep, batch_sizes);
    throw py::type_error("x must be float32 or float64");
}

// The gradients (dx or None, dh0, dcarry0, dW_ih, dW_hh, db_ih, db_hh) of the pass `tape` kept.
template <typename T>
py::tuple sequence_backward_impl(const SequenceTape<T>& tape, const py::handle& x_in,
                                 const py::handle& h0_in, const py::handle& carry0_in,
                                 const py::handle& W_ih_in, const py::handle& W_hh_in,
                                 const py::handle& b_ih_in, const py::handle& b_hh_in,
                                 const py::handle& h_in, const py::handle& dy_in,
                                 const py::handle& dh_n_in, const py::handle& dcarry_n_in,
                                 bool need_dx) {
    std::unique_ptr<Cell<T>> cell = make_cell<T>(tape.cell);
    const CellTraits& traits = cell->traits;
    const py::ssize_t B = tape.rows.B, I = tape.I, H = tape.H;
    const py::ssize_t G = traits.gates * H, C = traits.carried * H;
    CArray<T> x = sequence_array<T>("x", x_in, shape_with(tape.leading, I));
    const SequenceLayer<T> layer(h0_in, carry0_in, W_ih_in, W_hh_in, b_ih_in, b_hh_in, B, I, H,
                                 traits);
    CArray<T> h = sequence_array<T>("h", h_in, shape_with(tape.leading, H));
    std::optional<CArray<T>> dy;
    if (!dy_in.is_none()) dy = sequence_array<T>("dy", dy_in, shape_with(tape.leading, H));
    CArray<T> dh_n = sequence_array<T>("dh_n", dh_n_in, {B, H});
    CArray<T> dcarry_n = sequence_array<T>("dcarry_n", dcarry_n_in, {B, C});
    CArray<T> dx =
        pooled_array<T>(need_dx ? shape_with(tape.leading, I) : std::vector<py::ssize_t>{0});
    CArray<T> dh0({B, H}), dcarry0({B, C}), dW_ih = pooled_array<T>({G, I});
    CArray<T> dW_hh = pooled_array<T>({G, H}), db_ih({G}), db_hh({G});
    for (CArray<T>* a : {&dW_ih, &dW_hh, &db_ih, &db_hh})
        std::fill(a->mutable_data(), a->mutable_data() + a->size(), T(0));
    {
        const LayerGrads<T> g{dW_ih.mutable_data(), dW_hh.mutable_data(), db_ih.mutable_data(),
                              db_hh.mutable_data()};
        const SequenceSteps<const T> kept{tape.gates.data(), tape.extra.data(), tape.carry.data(),
                                          h.data()};
        T *dx_out = need_dx ? dx.mutable_data() : nullptr, *dh0_out = dh0.mutable_data();
        T* dcarry0_out = dcarry0.mutable_data();
        const T* dy_data = data_of(dy);
        py::gil_scoped_release release;
        sequence_backward<T>(*cell, layer.weights(), tape.rows, x.data(), layer.h0.data(),
                             layer.carry0.data(), int(I), int(H), tape.reverse, kept, dy_data,
                             dh_n.data(), dcarry_n.data(), dx_out, dh0_out, dcarry0_out, g);
    }
    return py::make_tuple(need_dx ? py::object(dx) : py::object(py::none()), dh0, dcarry0, dW_ih,
                          dW_hh, db_ih, db_hh);
}

template <typename T>
void bind_sequence(py::module_& m, const char* name) {
    py::class_<SequenceTape<T>>(m, name).def_property_readonly(
        "nbytes", [](const SequenceTape<T>& t) {
            return (t.gates.size() + t.extra.size() + t.carry.size()) * sizeof(T);
        });
    m.def("sequence_backward", &sequence_backward_impl<T>, py::arg("tape"), py::arg("x"),
          py::arg("h0"), py::arg("carry0"), py::arg("W_ih"), py::arg("W_hh"), py::arg("b_ih"),
          py::arg("b_hh"), py::arg("h"), py::arg("dy").none(true), py::arg("dh_n"),
          py::arg("dcarry_n"), py::arg("need_dx"));
}

}  // namespace

PYBIND11_MODULE(TBPTT_MODULE_NAME(TBPTT_ISA_NAME), m) {
    m.doc() = "tbptt's compiled engine (private; use the tbptt package)";
    py::register_exception<Divergence>(m, "Divergence", PyExc_FloatingPointError);
    divergence_type() = m.attr("Divergence");
    py::register_exception<InvalidArgument>(m, "InvalidArgument", PyExc_ValueError);
    py::register_exception<OutOfMemory>(m, "OutOfMemory", PyExc_MemoryError);
    bind_engine<float>(m, "Engine32");
    bind_engine<double>(m, "Engine64");
    m.def("predict", &predict_any, py::arg("params"), py::arg("cell"), py::arg("input_size"),
          py::arg("hidden_size"), py::arg("output_size"), py::arg("num_layers"), py::arg("x"),
          py::arg("tokens"), py::arg("state"));
    bind_sequence<float>(m, "SequenceTape32");
    bind_sequence<double>(m, "SequenceTape64");
    m.def("sequence_forward", &sequence_forward_any, py::arg("cell"), py::arg("x"), py::arg("h0"),
          py::arg("carry0"), py::arg("W_ih"), py::arg("W_hh"), py::arg("b_ih"), py::arg("b_hh"),
          py::arg("reverse"), py::arg("keep"), py::arg("batch_sizes") = py::none());
    // The core's traits of a cell (tbptt/cells.py holds the same facts; tests/test_cells.py
    // compares them); ValueError for an unknown name.
    m.def(
        "cell_traits",
        [](const std::string& name) {
            const CellTraits traits = cell_traits(name);
            py::dict d;
            d["gates"] = traits.gates, d["extra"] = traits.extra, d["carried"] = traits.carried;
            d["separate_recurrence"] = traits.separate_recurrence;
            d["keeps_gates"] = traits.keeps_gates;
            return d;
        },
        py::arg("name"));
    // The core's facts of a loss (tbptt/losses.py holds the same; tests/test_cells.py compares
    // them); ValueError for an unknown name.
    m.def(
        "loss_traits",
        [](const std::string& name) {
            const LossTraits traits = loss_traits(loss_of(name));
            py::dict d;
            d["classes"] = traits.classes, d["outputs_per_target"] = traits.outputs_per_target;
            return d;
        },
        py::arg("name"));
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw py::value_error("n must be >= 1");
        set_max_threads(n);
    });
    m.def("get_num_threads", []() { return max_threads().load(); });
    m.def("build_info", []() {
        py::dict info;
        info["isa"] = TBPTT_STR(TBPTT_ISA_NAME);
        info["eigen_simd"] = Eigen::SimdInstructionSetsInUse();
        info["eigen_version"] = std::to_string(EIGEN_WORLD_VERSION) + "." +
                                std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                std::to_string(EIGEN_MINOR_VERSION);
#ifdef _OPENMP
        info["openmp"] = true;
#else
        info["openmp"] = false;
#endif
        info["compiler"] = __VERSION__;
        return info;
    });
}
