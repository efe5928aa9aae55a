// The Python module fusedops._C. Importing it runs the operator registrations (ops.cpp and
// the backend files); its few functions describe the machine and the build, for
// fusedops.__init__, the tests and the benchmarks.
#include <Python.h>

#include <string>

#include "common/caches.h"
#include "common/tuning.h"
#include "cpu/kernels/cpu_features.h"
#include "cpu/kernels/gemm/gemm.h"
#include "cpu/kernels/gemm/gemm_bf16.h"

#ifndef FUSEDOPS_TORCH_VERSION
#define FUSEDOPS_TORCH_VERSION "unknown"
#endif

namespace {

using fusedops::Isa;

void set_str(PyObject* d, const char* key, const std::string& v) {
  PyObject* o = PyUnicode_FromString(v.c_str());
  PyDict_SetItemString(d, key, o);
  Py_DECREF(o);
}

void set_int(PyObject* d, const char* key, long long v) {
  PyObject* o = PyLong_FromLongLong(v);
  PyDict_SetItemString(d, key, o);
  Py_DECREF(o);
}

// _cpu_info() -> dict: model, best and active instruction set, caches, GEMM microkernels.
PyObject* cpu_info(PyObject*, PyObject*) {
  const auto& ci = fusedops::cpu_info();
  const Isa isa = fusedops::active_isa();
  PyObject* d = PyDict_New();
  set_str(d, "model", ci.model);
  set_str(d, "best_isa", fusedops::isa_name(ci.best));
  set_str(d, "isa", fusedops::isa_name(isa));
  set_int(d, "l1d", ci.l1d);
  set_int(d, "l2", ci.l2);
  set_int(d, "l3", ci.l3);
  auto f32 = fusedops::cpu::microkernel_info<float>(isa);
  auto f64 = fusedops::cpu::microkernel_info<double>(isa);
  set_str(d, "gemm_f32", std::to_string(f32.mr) + "x" + std::to_string(f32.nr));
  set_str(d, "gemm_f64", std::to_string(f64.mr) + "x" + std::to_string(f64.nr));
  set_str(d, "bf16", fusedops::cpu::bf16_path());
  return d;
}

// _set_bf16(mode) -> str: how bf16 products run ("auto", "native", "widen", "avx512_bf16"; as
// FUSEDOPS_BF16);
// returns the path in force (cpu_info()["bf16"]).
PyObject* set_bf16(PyObject*, PyObject* arg) {
  PyObject* bytes = PyUnicode_AsUTF8String(arg);
  if (!bytes) return nullptr;
  std::string name = PyBytes_AsString(bytes);
  Py_DECREF(bytes);
  fusedops::Bf16Mode mode;
  if (!fusedops::parse_bf16_mode(name, &mode)) {
    PyErr_SetString(PyExc_ValueError, "fusedops._set_bf16: expected 'auto', 'native', 'widen' or 'avx512_bf16'");
    return nullptr;
  }
  fusedops::set_bf16_mode(mode);
  return PyUnicode_FromString(fusedops::cpu::bf16_path());
}

// _set_isa(name) -> str: caps the instruction set ("generic", "avx2", "avx512"); returns the
// one in force (never above what the CPU supports).
PyObject* set_isa(PyObject*, PyObject* arg) {
  PyObject* bytes = PyUnicode_AsUTF8String(arg);
  if (!bytes) return nullptr;
  std::string name = PyBytes_AsString(bytes);
  Py_DECREF(bytes);
  Isa isa;
  if (!fusedops::parse_isa(name, &isa)) {
    PyErr_SetString(PyExc_ValueError,
                    "fusedops._set_isa: expected 'generic', 'avx2' or 'avx512'");
    return nullptr;
  }
  return PyUnicode_FromString(fusedops::isa_name(fusedops::set_isa(isa)));
}

// _set_lce_chunk_rows(rows) -> int: rows per chunk of linear_cross_entropy on every backend
// (0: each backend's own rule); returns the previous setting.
PyObject* set_lce_chunk_rows(PyObject*, PyObject* arg) {
  const long long rows = PyLong_AsLongLong(arg);
  if (rows == -1 && PyErr_Occurred()) return nullptr;
  if (rows < 0) {
    PyErr_SetString(PyExc_ValueError, "fusedops._set_lce_chunk_rows: expected rows >= 0");
    return nullptr;
  }
  return PyLong_FromLongLong((long long)fusedops::lce_chunk_rows_setting().exchange(rows));
}

// _fma_peak_gflops(threads, seconds) -> float: sustained fp32 FMA rate with the widest
// vectors in force.
PyObject* fma_peak(PyObject*, PyObject* args) {
  int threads = 1;
  double seconds = 0.2;
  if (!PyArg_ParseTuple(args, "id", &threads, &seconds)) return nullptr;
  double r;
  Py_BEGIN_ALLOW_THREADS r = fusedops::cpu::fma_peak_gflops(threads, seconds);
  Py_END_ALLOW_THREADS return PyFloat_FromDouble(r);
}

// _bf16_peak_gflops(threads, seconds) -> float: sustained rate of the bf16 path in force.
PyObject* bf16_peak(PyObject*, PyObject* args) {
  int threads = 1;
  double seconds = 0.2;
  if (!PyArg_ParseTuple(args, "id", &threads, &seconds)) return nullptr;
  double r;
  Py_BEGIN_ALLOW_THREADS r = fusedops::cpu::bf16_peak_gflops(threads, seconds);
  Py_END_ALLOW_THREADS return PyFloat_FromDouble(r);
}

// _empty_cache() -> int: frees the scratch, pool and loss caches; returns the bytes freed.
PyObject* empty_cache(PyObject*, PyObject*) {
  size_t freed;
  Py_BEGIN_ALLOW_THREADS freed = fusedops::empty_caches();
  Py_END_ALLOW_THREADS return PyLong_FromSize_t(freed);
}

// _cache_bytes() -> dict: idle bytes held by each cache now.
PyObject* cache_bytes(PyObject*, PyObject*) {
  const fusedops::CacheBytes b = fusedops::cache_bytes();
  PyObject* d = PyDict_New();
  set_int(d, "scratch", (long long)b.scratch);
  set_int(d, "rnn_pool", (long long)b.rnn_pool);
  set_int(d, "loss", (long long)b.loss);
  return d;
}

PyMethodDef methods[] = {
    {"_cpu_info", cpu_info, METH_NOARGS, "CPU model, instruction sets, caches, GEMM tiles."},
    {"_set_isa", set_isa, METH_O, "Cap the instruction set the kernels use."},
    {"_set_lce_chunk_rows", set_lce_chunk_rows, METH_O, "Rows per chunk of linear_cross_entropy (0: automatic)."},
    {"_set_bf16", set_bf16, METH_O, "How bf16 products run: 'auto', 'native' or 'widen'."},
    {"_empty_cache", empty_cache, METH_NOARGS, "Free the kernels' caches; returns the bytes freed."},
    {"_cache_bytes", cache_bytes, METH_NOARGS, "Idle bytes held by each cache."},
    {"_fma_peak_gflops", fma_peak, METH_VARARGS, "Measured fp32 FMA peak (threads, seconds)."},
    {"_bf16_peak_gflops", bf16_peak, METH_VARARGS, "Measured peak of the bf16 path in force (threads, seconds)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fusedops compiled kernels", -1, methods,
                      nullptr, nullptr, nullptr, nullptr};

}  // namespace

extern "C" __attribute__((visibility("default"))) PyObject* PyInit__C() {
  PyObject* m = PyModule_Create(&module);
  if (m) PyModule_AddStringConstant(m, "torch_version", FUSEDOPS_TORCH_VERSION);
  return m;
}
